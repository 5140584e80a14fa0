"""The library's element conversions against independent tables: numpy's float16 and ml_dtypes' bfloat16 and
float8_e4m3fn. Decoding must agree on every bit pattern; encoding (round to nearest even, what write_kv and
the CPU backend use) on random values over every binade, exact ties, subnormals and the edges of the range.
The library's fp8 encoding saturates at +-448 (documented); ml_dtypes gives NaN there, so the table is fed
values clipped to the range first."""

import numpy as np
import pytest

import pagedattn
from pagedattn import _pagedattn as _C

ml_dtypes = pytest.importorskip("ml_dtypes")

FORMATS = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16, "fp8_e4m3": ml_dtypes.float8_e4m3fn}


def _bits_dtype(name):
    return np.uint8 if np.dtype(FORMATS[name]).itemsize == 1 else np.uint16


@pytest.mark.parametrize("name", FORMATS)
def test_decoding_agrees_on_every_bit_pattern(name):
    bits = np.arange(256 if _bits_dtype(name) == np.uint8 else 65536).astype(_bits_dtype(name))
    want = bits.view(FORMATS[name]).astype(np.float32)
    got = _C._decode(bits, name)
    np.testing.assert_array_equal(got, want)  # NaN positions must agree too


@pytest.mark.parametrize("name", FORMATS)
def test_encoding_agrees_with_the_table(rng, name):
    n = 200_000
    values = np.ldexp(rng.uniform(1.0, 2.0, n), rng.integers(-30, 20, n)) * rng.choice([-1.0, 1.0], n)
    # Exact midpoints between neighbouring representable values (ties to even), from the table itself.
    with np.errstate(invalid="ignore"):  # NaN patterns decode to NaN: dropped below
        grid = np.sort(np.unique(np.arange(256 if _bits_dtype(name) == np.uint8 else 65536)
                                 .astype(_bits_dtype(name)).view(FORMATS[name]).astype(np.float64)))
    grid = grid[np.isfinite(grid)]
    mids = (grid[1:] + grid[:-1]) / 2
    values = np.concatenate([values, mids, [0.0, -0.0, 65504.0, 65519.0, 65520.0, 448.0, 460.0, 464.0, 1e30]])
    values = values.astype(np.float32)
    values = values[values.astype(np.float64) == values]  # float32-exact inputs only
    table_input = np.clip(values, -448.0, 448.0) if name == "fp8_e4m3" else values
    with np.errstate(over="ignore"):
        want = table_input.astype(FORMATS[name]).view(_bits_dtype(name))
    got = _C._encode(values, name)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(float(values[i]), int(got[i]), int(want[i])) for i in bad[:5]]
