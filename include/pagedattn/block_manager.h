// Host-side bookkeeping of the paged KV cache: which block holds which tokens of which sequence.
//
// One pool of num_blocks blocks of block_size tokens. A block is either free or owned by one or more
// sequences (ref_count = number of owners). Full blocks whose KV has been computed carry a chained hash of
// their tokens (prefix caching): a later allocation whose prompt starts with the same tokens reuses them.
// Free blocks that carry a hash stay in the cache and are recycled least-recently-used first, only when no
// uncached free block remains.
//
// Protocol for one engine step: allocate()/append() tokens, build the batch (batch_builder.h), run the model
// so the KV of those tokens is written, then mark_computed(). Only computed full blocks become visible to
// prefix caching.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pagedattn/dtype.h"
#include "pagedattn/kv_format.h"
#include "pagedattn/turboquant.h"

namespace pagedattn {

using SeqId = int64_t;
using TokenId = int32_t;

/// An instruction for the caller: copy every layer's K and V of block src into block dst (copy-on-write).
struct BlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
  friend bool operator==(const BlockCopy&, const BlockCopy&) = default;
};

/// The numbers that decide how many bytes one block costs across a whole model.
struct KVCacheGeometry {
  int64_t num_layers = 1;
  int64_t num_kv_heads = 1;
  int64_t head_dim = 128;
  int64_t block_size = 16;
  DType dtype = DType::kBFloat16;  ///< the cache format (kv_format.h): data and metadata planes both count
  std::optional<tq::Preset> tq;    ///< a TurboQuant cache (dtype is then ignored): all four planes count

  /// K and V of every layer for one block.
  int64_t bytes_per_block() const {
    const int64_t per_token = tq ? num_kv_heads * tq::token_bytes(*tq, static_cast<int>(head_dim)).total()
                                 : kv_bytes_per_token(dtype, num_kv_heads, head_dim);
    return num_layers * block_size * per_token;
  }
  /// The most blocks that fit in a budget of bytes.
  int64_t blocks_for_budget(size_t budget_bytes) const {
    return static_cast<int64_t>(budget_bytes / static_cast<size_t>(bytes_per_block()));
  }
};

class BlockManager {
 public:
  BlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching = true);
  /// The traditional contiguous cache, for comparison: every sequence reserves one run of consecutive blocks
  /// for reserve_tokens_per_seq tokens (a model's max_model_len) when it is allocated, and keeps it until it
  /// is freed. No prefix caching, no fork; appends never need a block. The same kernels read it (its block
  /// table is the run).
  static BlockManager contiguous(int32_t num_blocks, int32_t block_size, int64_t reserve_tokens_per_seq);
  /// 0 for the paged cache; else the tokens each sequence reserves (contiguous()).
  int64_t reserve_tokens_per_seq() const { return reserve_tokens_; }

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  int32_t block_size() const { return block_size_; }
  bool prefix_caching() const { return prefix_caching_; }
  /// Blocks that no sequence owns (uncached ones and cached ones that may be recycled).
  int32_t num_free_blocks() const {
    return static_cast<int32_t>(free_uncached_.size() + free_cached_.size());
  }
  /// Free blocks that still hold a cached prefix.
  int32_t num_cached_free_blocks() const { return static_cast<int32_t>(free_cached_.size()); }
  /// Fraction of the pool owned by sequences.
  double usage() const { return 1.0 - static_cast<double>(num_free_blocks()) / num_blocks(); }

  /// Blocks needed to hold num_tokens tokens.
  int64_t blocks_for_tokens(int64_t num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }
  /// True if a new sequence of num_tokens tokens fits for sure (prefix hits can only lower the need;
  /// contiguous: a free run of reserved blocks exists).
  bool can_allocate(int64_t num_tokens) const;
  /// True if num_tokens more tokens (copy-on-write included) fit for sequence seq.
  bool can_append(SeqId seq, int64_t num_tokens) const;

  /// Allocates blocks for a new sequence's prompt, reusing cached blocks for the longest matching prefix
  /// (never the block holding the last prompt token, which the model must compute). Returns the number of
  /// prompt tokens whose KV is already in the cache; the sequence starts with that many tokens computed.
  int64_t allocate(SeqId seq, std::span<const TokenId> prompt);

  /// Appends tokens to a sequence; a new block when the last one is full. Appending into a block that other
  /// sequences share moves this sequence to a private copy: the returned copies must be applied to the cache
  /// before the tokens' KV is written.
  std::vector<BlockCopy> append(SeqId seq, std::span<const TokenId> tokens);

  /// The child shares every block of the parent. The parent must have no uncomputed tokens: appends after the
  /// fork copy the shared last block on write.
  void fork(SeqId parent, SeqId child);

  /// Records that the KV of the first num_computed tokens is in the cache; their full blocks become
  /// cacheable.
  void mark_computed(SeqId seq, int64_t num_computed);

  /// Releases a finished sequence's blocks; computed full blocks stay cached.
  void free(SeqId seq);

  /// Preemption by recomputation: releases the sequence's blocks into the cache (computed full blocks stay
  /// cached, so recomputing the returned tokens hits the prefix cache) and forgets the sequence.
  std::vector<TokenId> preempt(SeqId seq);

  bool contains(SeqId seq) const { return seqs_.count(seq) != 0; }
  std::span<const int32_t> block_table(SeqId seq) const { return get(seq).table; }
  std::span<const TokenId> tokens(SeqId seq) const { return get(seq).tokens; }
  int64_t num_tokens(SeqId seq) const { return static_cast<int64_t>(get(seq).tokens.size()); }
  int64_t num_computed_tokens(SeqId seq) const { return get(seq).computed; }
  std::vector<SeqId> sequences() const;

  int32_t ref_count(int32_t block) const { return blocks_.at(block).ref; }
  /// The prefix hash of a cached block, if it has one.
  std::optional<uint64_t> block_hash(int32_t block) const;

  /// The chained hash of a full block: over the previous block's hash (0 for the first) and this block's
  /// tokens.
  static uint64_t chain_hash(uint64_t parent_hash, std::span<const TokenId> tokens);

 private:
  struct Block {
    int32_t ref = 0;
    bool hashed = false;
    uint64_t hash = 0;
    uint64_t parent_hash = 0;
    std::vector<TokenId> tokens;  // the tokens behind the hash: a hit is verified, not trusted
    uint64_t free_tick = 0;       // when it became free (LRU order)
  };
  struct Sequence {
    std::vector<int32_t> table;
    std::vector<TokenId> tokens;
    std::vector<uint64_t> hashes;  // chain hashes of the leading computed full blocks
    int64_t computed = 0;
  };

  const Sequence& get(SeqId seq) const;
  Sequence& get(SeqId seq);
  /// Contiguous layout: the first block of a free run of `count` blocks, or -1.
  int32_t find_free_run(int64_t count) const;
  int64_t reserve_tokens_ = 0;
  int32_t take_free_block();
  void release_block(int32_t block);
  std::optional<int32_t> lookup_cached(uint64_t parent_hash, uint64_t hash,
                                       std::span<const TokenId> tokens) const;
  void acquire_cached(int32_t block);

  int32_t block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_uncached_;                  // a stack
  std::set<std::pair<uint64_t, int32_t>> free_cached_;  // (free_tick, block): begin() is least recently used
  std::unordered_map<uint64_t, int32_t> hash_to_block_;
  std::unordered_map<SeqId, Sequence> seqs_;
  uint64_t tick_ = 0;
};

}  // namespace pagedattn
