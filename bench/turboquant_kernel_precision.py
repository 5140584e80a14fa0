"""Which operand precision the CUDA TurboQuant attention kernels need (bench/NOTES.md, TurboQuant on CUDA).

The planned kernels score a key as n' <q', c[idx]> (q' = R q rotated once per step, c the codebook) and form
P V as sum_n (p_n s_n) q_n + sum_n p_n m_n. This emulates them in numpy with the tensor-core operands (q',
centroids, p s) rounded to bf16 or to fp16 and fp32 elsewhere, against the fp64 reference over the same codes,
for random codes, norms, value scales and minimums (head dim 128, 4096 keys, 4 query heads). The issue's bound
is 2e-3 relative. Run: python3 bench/turboquant_kernel_precision.py (needs the pagedattn package, CPU build).
"""
import numpy as np

import pagedattn


def bf16(x):
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def f16(x):
    return np.asarray(x, np.float64).astype(np.float16).astype(np.float64)


def main(d=128, keys=4096, heads=4, trials=5):
    rng = np.random.default_rng(0)
    print("bits  operands  rel. error (max over trials)")
    for bits in (3, 4):
        cb = np.array(pagedattn.turboquant_codebook(d, bits)["centroids"])
        worst = {"bf16": 0.0, "fp16": 0.0}
        for _ in range(trials):
            idx = rng.integers(0, 2**bits, (keys, d))
            norm = np.abs(rng.normal(1, 0.3, keys)) * np.sqrt(d)  # n'
            vq = rng.integers(0, 16, (keys, d))
            vs, vm = np.abs(rng.normal(0.1, 0.02, keys)), rng.normal(-0.7, 0.1, keys)
            q = bf16(rng.normal(0, 1, (heads, d)) / np.sqrt(d))  # the rotated query, a bf16 input's values
            k, v = norm[:, None] * cb[idx], vs[:, None] * vq + vm[:, None]
            s = q @ k.T
            p = np.exp(s - s.max(1, keepdims=True))
            ref = (p @ v) / p.sum(1, keepdims=True)
            for name, rnd in (("bf16", bf16), ("fp16", f16)):
                s2 = (rnd(q) @ rnd(cb)[idx].T) * norm[None, :]
                p2 = np.exp(s2 - s2.max(1, keepdims=True))
                o = (rnd(p2 * vs[None, :]) @ vq + (p2 @ vm)[:, None]) / p2.sum(1, keepdims=True)
                worst[name] = max(worst[name], np.linalg.norm(o - ref) / np.linalg.norm(ref))
        for name, err in worst.items():
            print(f"{bits:4d}  {name:8s}  {err:.2e}")


if __name__ == "__main__":
    main()
