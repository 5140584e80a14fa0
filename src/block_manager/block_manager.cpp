#include "pagedattn/block_manager.h"

#include <algorithm>

#include "pagedattn/error.h"

namespace pagedattn {
namespace {

uint64_t mix64(uint64_t x) {  // splitmix64 finalizer: every input bit moves every output bit
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

uint64_t BlockManager::chain_hash(uint64_t parent_hash, std::span<const TokenId> tokens) {
  uint64_t h = mix64(parent_hash ^ 0x9e3779b97f4a7c15ULL) ^ tokens.size();
  for (TokenId t : tokens)
    h = mix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x632be59bd9b4e019ULL));
  return h;
}

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching)
    : block_size_(block_size), prefix_caching_(enable_prefix_caching) {
  PA_CHECK(num_blocks >= 1, "BlockManager: num_blocks must be >= 1, got ", num_blocks);
  PA_CHECK(block_size >= 1 && block_size <= 256, "BlockManager: block_size ", block_size,
           " is outside 1..256");
  blocks_.resize(static_cast<size_t>(num_blocks));
  free_uncached_.reserve(static_cast<size_t>(num_blocks));
  for (int32_t b = num_blocks - 1; b >= 0; --b)
    free_uncached_.push_back(b);  // pop_back hands out 0, 1, 2, ...
}

BlockManager BlockManager::contiguous(int32_t num_blocks, int32_t block_size,
                                      int64_t reserve_tokens_per_seq) {
  PA_CHECK(reserve_tokens_per_seq >= 1,
           "BlockManager: a contiguous cache reserves >= 1 token per sequence, got ", reserve_tokens_per_seq);
  BlockManager m(num_blocks, block_size, /*enable_prefix_caching=*/false);
  m.reserve_tokens_ = reserve_tokens_per_seq;
  return m;
}

bool BlockManager::can_allocate(int64_t num_tokens) const {
  if (reserve_tokens_ == 0) return blocks_for_tokens(num_tokens) <= num_free_blocks();
  return num_tokens <= reserve_tokens_ && find_free_run(blocks_for_tokens(reserve_tokens_)) >= 0;
}

int32_t BlockManager::find_free_run(int64_t count) const {
  int64_t run = 0;
  for (int32_t b = 0; b < num_blocks(); ++b) {
    run = blocks_[b].ref == 0 ? run + 1 : 0;
    if (run == count) return static_cast<int32_t>(b - count + 1);
  }
  return -1;
}

const BlockManager::Sequence& BlockManager::get(SeqId seq) const {
  auto it = seqs_.find(seq);
  PA_CHECK(it != seqs_.end(), "BlockManager: unknown sequence ", seq);
  return it->second;
}

BlockManager::Sequence& BlockManager::get(SeqId seq) {
  return const_cast<Sequence&>(static_cast<const BlockManager*>(this)->get(seq));
}

std::vector<SeqId> BlockManager::sequences() const {
  std::vector<SeqId> ids;
  for (const auto& [id, s] : seqs_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::optional<uint64_t> BlockManager::block_hash(int32_t block) const {
  const Block& b = blocks_.at(block);
  return b.hashed ? std::optional<uint64_t>(b.hash) : std::nullopt;
}

int32_t BlockManager::take_free_block() {
  int32_t id;
  if (!free_uncached_.empty()) {
    id = free_uncached_.back();
    free_uncached_.pop_back();
  } else {
    PA_CHECK(!free_cached_.empty(), "BlockManager: out of blocks (all ", num_blocks(),
             " are owned); check can_allocate/can_append first or preempt a sequence");
    id = free_cached_.begin()->second;  // evict the least recently used cached block
    free_cached_.erase(free_cached_.begin());
    Block& b = blocks_[id];
    auto it = hash_to_block_.find(b.hash);
    if (it != hash_to_block_.end() && it->second == id) hash_to_block_.erase(it);
    b.hashed = false;
    b.tokens.clear();
  }
  blocks_[id].ref = 1;
  return id;
}

void BlockManager::release_block(int32_t id) {
  Block& b = blocks_[id];
  if (--b.ref > 0) return;
  if (b.hashed) {
    b.free_tick = tick_++;
    free_cached_.emplace(b.free_tick, id);
  } else {
    free_uncached_.push_back(id);
  }
}

std::optional<int32_t> BlockManager::lookup_cached(uint64_t parent_hash, uint64_t hash,
                                                   std::span<const TokenId> tokens) const {
  auto it = hash_to_block_.find(hash);
  if (it == hash_to_block_.end()) return std::nullopt;
  const Block& b = blocks_[it->second];
  // A hash match is a hint; the tokens and the parent hash must match too (collisions must never alias KV).
  if (!b.hashed || b.hash != hash || b.parent_hash != parent_hash ||
      !std::equal(tokens.begin(), tokens.end(), b.tokens.begin(), b.tokens.end())) {
    return std::nullopt;
  }
  return it->second;
}

void BlockManager::acquire_cached(int32_t id) {
  Block& b = blocks_[id];
  if (b.ref == 0) free_cached_.erase({b.free_tick, id});
  ++b.ref;
}

int64_t BlockManager::allocate(SeqId seq, std::span<const TokenId> prompt) {
  PA_CHECK(!contains(seq), "BlockManager: sequence ", seq, " is already allocated");
  const int64_t n = static_cast<int64_t>(prompt.size());
  PA_CHECK(reserve_tokens_ == 0 || n <= reserve_tokens_, "BlockManager: a prompt of ", n,
           " tokens is longer than the contiguous cache's reservation of ", reserve_tokens_);
  PA_CHECK(can_allocate(n), "BlockManager: a prompt of ", n, " tokens needs ",
           blocks_for_tokens(reserve_tokens_ > 0 ? reserve_tokens_ : n),
           reserve_tokens_ > 0 ? " consecutive" : "", " blocks but only ", num_free_blocks(), " are free");
  Sequence s;
  s.tokens.assign(prompt.begin(), prompt.end());
  if (reserve_tokens_ > 0) {
    // The whole reservation at once, as consecutive blocks: the contiguous cache's table is that run.
    const int64_t count = blocks_for_tokens(reserve_tokens_);
    const int32_t first = find_free_run(count);
    for (int32_t b = first; b < first + count; ++b) {
      blocks_[b].ref = 1;
      s.table.push_back(b);
    }
    free_uncached_.erase(std::remove_if(free_uncached_.begin(), free_uncached_.end(),
                                        [&](int32_t b) { return b >= first && b < first + count; }),
                         free_uncached_.end());
    seqs_.emplace(seq, std::move(s));
    return 0;
  }
  uint64_t parent = 0;
  if (prefix_caching_) {
    // Only blocks that end before the last prompt token may hit: the model must compute at least that token.
    for (int64_t i = 0; (i + 1) * block_size_ <= n - 1; ++i) {
      const auto tokens =
          prompt.subspan(static_cast<size_t>(i * block_size_), static_cast<size_t>(block_size_));
      const uint64_t h = chain_hash(parent, tokens);
      const auto hit = lookup_cached(parent, h, tokens);
      if (!hit) break;
      acquire_cached(*hit);
      s.table.push_back(*hit);
      s.hashes.push_back(h);
      parent = h;
    }
  }
  s.computed = static_cast<int64_t>(s.table.size()) * block_size_;
  while (static_cast<int64_t>(s.table.size()) < blocks_for_tokens(n)) s.table.push_back(take_free_block());
  seqs_.emplace(seq, std::move(s));
  return seqs_.at(seq).computed;
}

bool BlockManager::can_append(SeqId seq, int64_t num_tokens) const {
  const Sequence& s = get(seq);
  if (reserve_tokens_ > 0) return static_cast<int64_t>(s.tokens.size()) + num_tokens <= reserve_tokens_;
  const int64_t have = static_cast<int64_t>(s.tokens.size());
  int64_t need = blocks_for_tokens(have + num_tokens) - static_cast<int64_t>(s.table.size());
  const bool tail_partial = have % block_size_ != 0;
  if (num_tokens > 0 && tail_partial && blocks_[s.table.back()].ref > 1) ++need;  // copy-on-write of the tail
  return need <= num_free_blocks();
}

std::vector<BlockCopy> BlockManager::append(SeqId seq, std::span<const TokenId> tokens) {
  PA_CHECK(can_append(seq, static_cast<int64_t>(tokens.size())), "BlockManager: appending ", tokens.size(),
           " tokens to sequence ", seq, " needs more blocks than the ", num_free_blocks(), " free");
  Sequence& s = get(seq);
  std::vector<BlockCopy> copies;
  if (reserve_tokens_ > 0) {  // the reservation already holds them
    s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
    return copies;
  }
  for (TokenId t : tokens) {
    const int64_t pos = static_cast<int64_t>(s.tokens.size());
    if (pos % block_size_ == 0) {
      s.table.push_back(take_free_block());
    } else if (blocks_[s.table.back()].ref > 1) {
      // The tail block is shared (fork): write into a private copy, never into the shared block.
      const int32_t shared = s.table.back();
      const int32_t copy = take_free_block();
      copies.push_back({shared, copy});
      release_block(shared);
      s.table.back() = copy;
    }
    s.tokens.push_back(t);
  }
  return copies;
}

void BlockManager::fork(SeqId parent, SeqId child) {
  PA_CHECK(!contains(child), "BlockManager: fork target ", child, " already exists");
  PA_CHECK(reserve_tokens_ == 0, "BlockManager: a contiguous cache cannot fork (sequences share no blocks)");
  const Sequence& p = get(parent);
  PA_CHECK(p.computed == static_cast<int64_t>(p.tokens.size()), "BlockManager: fork of sequence ", parent,
           " with uncomputed tokens (", p.computed, " of ", p.tokens.size(),
           " computed); fork after the step");
  for (int32_t b : p.table) ++blocks_[b].ref;
  Sequence c = p;
  seqs_.emplace(child, std::move(c));
}

void BlockManager::mark_computed(SeqId seq, int64_t num_computed) {
  Sequence& s = get(seq);
  PA_CHECK(num_computed >= s.computed && num_computed <= static_cast<int64_t>(s.tokens.size()),
           "BlockManager: mark_computed(", num_computed, ") for sequence ", seq, " must lie in [", s.computed,
           ", ", s.tokens.size(), "]");
  s.computed = num_computed;
  if (!prefix_caching_) return;
  for (int64_t i = static_cast<int64_t>(s.hashes.size()); (i + 1) * block_size_ <= s.computed; ++i) {
    const uint64_t parent = i == 0 ? 0 : s.hashes[static_cast<size_t>(i - 1)];
    const auto tokens = std::span<const TokenId>(s.tokens).subspan(static_cast<size_t>(i * block_size_),
                                                                   static_cast<size_t>(block_size_));
    const uint64_t h = chain_hash(parent, tokens);
    s.hashes.push_back(h);
    Block& b = blocks_[s.table[static_cast<size_t>(i)]];
    if (!b.hashed) {
      b.hashed = true;
      b.hash = h;
      b.parent_hash = parent;
      b.tokens.assign(tokens.begin(), tokens.end());
    }
    hash_to_block_[h] = s.table[static_cast<size_t>(i)];
  }
}

void BlockManager::free(SeqId seq) {
  Sequence& s = get(seq);
  // Release the tail first so that, among equally old blocks, a prefix's later blocks are evicted before its
  // head.
  for (auto it = s.table.rbegin(); it != s.table.rend(); ++it) release_block(*it);
  seqs_.erase(seq);
}

std::vector<TokenId> BlockManager::preempt(SeqId seq) {
  std::vector<TokenId> tokens = get(seq).tokens;
  free(seq);
  return tokens;
}

}  // namespace pagedattn
