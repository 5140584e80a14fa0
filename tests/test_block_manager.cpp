// Block manager: unit tests and a randomized property test that simulates the KV contents the engine would
// write.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "pagedattn/batch_builder.h"
#include "pagedattn/block_manager.h"
#include "test_util.h"

namespace pagedattn {
namespace {

std::vector<TokenId> iota_tokens(int n, TokenId start = 100) {
  std::vector<TokenId> t(n);
  for (int i = 0; i < n; ++i) t[i] = start + i;
  return t;
}

TEST(BlockManager, AllocateAppendFree) {
  BlockManager m(10, 4);
  EXPECT_EQ(m.allocate(1, iota_tokens(6)), 0);
  EXPECT_EQ(m.block_table(1).size(), 2u);
  EXPECT_EQ(m.num_free_blocks(), 8);
  EXPECT_TRUE(m.append(1, iota_tokens(2)).empty());  // fills block 2 exactly
  EXPECT_EQ(m.block_table(1).size(), 2u);
  m.append(1, iota_tokens(1));
  EXPECT_EQ(m.block_table(1).size(), 3u);
  EXPECT_NEAR(m.usage(), 0.3, 1e-12);
  m.free(1);
  EXPECT_EQ(m.num_free_blocks(), 10);
  EXPECT_FALSE(m.contains(1));
}

TEST(BlockManager, PrefixHitSkipsTheBlockOfTheLastToken) {
  BlockManager m(16, 4);
  const auto prompt = iota_tokens(12);
  m.allocate(1, prompt);
  m.mark_computed(1, 12);
  // Same 12 tokens: blocks 0 and 1 hit; block 2 holds the last token and is computed again.
  EXPECT_EQ(m.allocate(2, prompt), 8);
  EXPECT_EQ(m.block_table(2)[0], m.block_table(1)[0]);
  EXPECT_EQ(m.block_table(2)[1], m.block_table(1)[1]);
  EXPECT_NE(m.block_table(2)[2], m.block_table(1)[2]);
  EXPECT_EQ(m.ref_count(m.block_table(1)[0]), 2);
  // Same first block, different second block: one block hits.
  auto other = prompt;
  other[5] = 7;
  EXPECT_EQ(m.allocate(3, other), 4);
  // Identical block contents after a different first block: the chained hash does not hit.
  auto shifted = prompt;
  shifted[0] = 9;
  EXPECT_EQ(m.allocate(4, shifted), 0);
}

TEST(BlockManager, OnlyComputedBlocksAreCached) {
  BlockManager m(16, 4);
  const auto prompt = iota_tokens(12);
  m.allocate(1, prompt);
  EXPECT_EQ(m.allocate(2, prompt), 0);  // nothing computed yet: no hit
  m.mark_computed(1, 5);                // block 0 computed
  EXPECT_EQ(m.allocate(3, prompt), 4);
}

TEST(BlockManager, FreedCachedBlocksAreReusedAndEvictedLeastRecentlyUsedFirst) {
  BlockManager m(4, 2);
  m.allocate(1, iota_tokens(5, 0));  // blocks for [0 1] [2 3] [4]
  m.mark_computed(1, 5);
  const std::vector<int32_t> t1(m.block_table(1).begin(), m.block_table(1).end());
  m.free(1);
  EXPECT_EQ(m.num_cached_free_blocks(), 2);
  EXPECT_EQ(m.num_free_blocks(), 4);
  // A hit revives cached free blocks.
  EXPECT_EQ(m.allocate(2, iota_tokens(5, 0)), 4);
  EXPECT_EQ(m.block_table(2)[0], t1[0]);
  m.free(2);
  // Needing all four blocks: uncached ones go first, then cached ones, the tail of the freed prefix before
  // its head.
  m.allocate(3, iota_tokens(3, 50));
  EXPECT_EQ(m.num_cached_free_blocks(), 2);
  m.append(3, iota_tokens(2, 60));  // a third block: evicts the LRU cached block = the freed prefix's tail
  EXPECT_EQ(m.block_table(3)[2], t1[1]);
  EXPECT_FALSE(m.block_hash(t1[1]).has_value());
  EXPECT_TRUE(m.block_hash(t1[0]).has_value());
}

TEST(BlockManager, ForkSharesAndCopiesOnWrite) {
  BlockManager m(8, 4);
  m.allocate(1, iota_tokens(6));
  m.mark_computed(1, 6);
  m.fork(1, 2);
  EXPECT_EQ(m.ref_count(m.block_table(1)[1]), 2);
  const int32_t shared_tail = m.block_table(1)[1];
  const auto copies = m.append(2, iota_tokens(1, 500));
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, shared_tail);
  EXPECT_EQ(copies[0].dst, m.block_table(2)[1]);
  EXPECT_EQ(m.ref_count(shared_tail), 1);
  EXPECT_EQ(m.block_table(1)[0], m.block_table(2)[0]);    // the full block stays shared
  EXPECT_TRUE(m.append(1, iota_tokens(1, 600)).empty());  // the parent now owns its tail alone
  EXPECT_ERROR_CONTAINS(m.fork(1, 3), "uncomputed tokens");
}

TEST(BlockManager, CapacityAndErrors) {
  BlockManager m(3, 4);
  EXPECT_TRUE(m.can_allocate(12));
  EXPECT_FALSE(m.can_allocate(13));
  EXPECT_ERROR_CONTAINS(m.allocate(1, iota_tokens(13)), "needs 4 blocks but only 3 are free");
  m.allocate(1, iota_tokens(12));
  EXPECT_FALSE(m.can_append(1, 1));
  EXPECT_ERROR_CONTAINS(m.append(1, iota_tokens(1)), "needs more blocks");
  EXPECT_ERROR_CONTAINS(m.allocate(1, iota_tokens(1)), "already allocated");
  EXPECT_ERROR_CONTAINS(m.free(9), "unknown sequence 9");
  EXPECT_ERROR_CONTAINS(m.mark_computed(1, 13), "must lie in [0, 12]");
  EXPECT_ERROR_CONTAINS(BlockManager(4, 0), "block_size 0 is outside 1..256");
}

TEST(BlockManager, SizingFromByteBudget) {
  KVCacheGeometry g{32, 8, 128, 16, DType::kBFloat16, std::nullopt};
  EXPECT_EQ(g.bytes_per_block(), 2 * 32 * 16 * 8 * 128 * 2);
  EXPECT_EQ(g.blocks_for_budget(10 * g.bytes_per_block() + 5), 10);
  g.dtype = DType::kFloat8E4M3;
  EXPECT_EQ(g.blocks_for_budget(10 * 2 * 32 * 16 * 8 * 128), 10);
  // int8: codes plus one fp32 scale per token and head in K and V.
  g.dtype = DType::kInt8;
  EXPECT_EQ(g.bytes_per_block(), 32 * 16 * 8 * 2 * (128 + 4));
  // TurboQuant tq_k4v4: 134 bytes per token and KV head for K and V together (3.8x fewer than bf16's 512).
  g.tq = tq::Preset::kK4V4;
  EXPECT_EQ(g.bytes_per_block(), 32 * 16 * 8 * 134);
}

// The contiguous layout: each sequence holds one run of consecutive blocks for its whole reservation; a pool
// fragmented by a freed run in the middle still serves a request that fits there; prefix caching and fork are
// off.
TEST(BlockManager, ContiguousReservations) {
  BlockManager m = BlockManager::contiguous(10, 4, 12);  // 3 blocks per sequence
  EXPECT_EQ(m.reserve_tokens_per_seq(), 12);
  EXPECT_FALSE(m.prefix_caching());
  EXPECT_EQ(m.allocate(1, iota_tokens(5)), 0);
  EXPECT_EQ(m.allocate(2, iota_tokens(5)), 0);  // the same tokens: no prefix sharing
  EXPECT_EQ(m.allocate(3, iota_tokens(1)), 0);
  EXPECT_EQ(std::vector<int32_t>(m.block_table(2).begin(), m.block_table(2).end()),
            (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(m.num_free_blocks(), 1);
  EXPECT_FALSE(m.can_allocate(1));
  EXPECT_TRUE(m.can_append(1, 7));
  EXPECT_FALSE(m.can_append(1, 8));  // past the reservation
  EXPECT_TRUE(m.append(1, iota_tokens(7)).empty());
  m.free(2);
  EXPECT_TRUE(m.can_allocate(12));
  EXPECT_FALSE(m.can_allocate(13));
  m.allocate(4, iota_tokens(2));
  EXPECT_EQ(m.block_table(4)[0], 3);
  EXPECT_ERROR_CONTAINS(m.fork(1, 9), "a contiguous cache cannot fork");
  EXPECT_ERROR_CONTAINS(m.allocate(5, iota_tokens(13)),
                        "longer than the contiguous cache's reservation of 12");
}

TEST(BatchBuilder, ChunkedAndDecodeRows) {
  BlockManager m(16, 4);
  m.allocate(1, iota_tokens(10));
  m.allocate(2, iota_tokens(3, 900));
  m.mark_computed(2, 3);
  m.append(2, iota_tokens(1, 950));
  const std::vector<BatchItem> items{{1, 6}, {2, 1}};
  HostBatch b = build_batch(m, items);
  EXPECT_EQ(b.seq_lens, (std::vector<int32_t>{6, 4}));
  EXPECT_EQ(b.query_start_loc, (std::vector<int32_t>{0, 6, 7}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 3}));
  const auto t1 = m.block_table(1), t2 = m.block_table(2);
  EXPECT_EQ(b.slot_mapping[4], int64_t{t1[1]} * 4 + 0);
  EXPECT_EQ(b.slot_mapping[6], int64_t{t2[0]} * 4 + 3);
  EXPECT_EQ(b.max_blocks_per_seq, 2);
  EXPECT_EQ(b.block_tables[1 * 2 + 1], -1);  // sequence 2 needs one block: padding
  EXPECT_ERROR_CONTAINS(build_batch(m, std::vector<BatchItem>{{1, 11}}), "uncomputed tokens");
}

// ---- property test
// ---------------------------------------------------------------------------------------------------

// The simulated cache holds, per slot, the identity of what the model would write there: a hash of the
// sequence's tokens up to and including that position. KV depends on the whole prefix, so this is what must
// match on a hit.
class Simulation {
 public:
  Simulation(int blocks, int block_size, uint64_t seed)
      : m_(blocks, block_size),
        bs_(block_size),
        slots_(static_cast<size_t>(blocks) * block_size, kEmpty),
        rng_(seed) {}

  void run(int steps) {
    for (int i = 0; i < steps; ++i) {
      const int op = pick(0, 9);
      if (op <= 2)
        new_sequence();
      else if (op <= 5)
        step();
      else if (op == 6)
        append();
      else if (op == 7)
        fork();
      else
        finish();
      check_invariants();
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ULL;

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  static uint64_t prefix_identity(std::span<const TokenId> tokens, int64_t pos) {
    uint64_t h = 1469598103934665603ULL;
    for (int64_t i = 0; i <= pos; ++i) h = (h ^ static_cast<uint64_t>(tokens[i])) * 1099511628211ULL;
    return h;
  }

  void new_sequence() {
    std::vector<TokenId> prompt;
    if (!prompts_.empty() && pick(0, 1)) {  // share a prefix with an earlier prompt to exercise hits
      const auto& base = prompts_[pick(0, static_cast<int>(prompts_.size()) - 1)];
      prompt.assign(base.begin(), base.begin() + pick(1, static_cast<int>(base.size())));
    }
    const int extra = pick(prompt.empty() ? 1 : 0, 3 * bs_);
    for (int i = 0; i < extra; ++i) prompt.push_back(pick(0, 5));  // a small alphabet: many equal blocks
    if (!m_.can_allocate(static_cast<int64_t>(prompt.size()))) return;
    const SeqId id = next_id_++;
    const int64_t cached = m_.allocate(id, prompt);
    ASSERT_LT(cached, static_cast<int64_t>(prompt.size()));
    ASSERT_EQ(cached % bs_, 0);
    // A prefix hit returns blocks whose contents are exactly this prompt's prefix.
    const auto table = m_.block_table(id);
    for (int64_t pos = 0; pos < cached; ++pos) {
      const int64_t slot = int64_t{table[pos / bs_]} * bs_ + pos % bs_;
      ASSERT_EQ(slots_[slot], prefix_identity(prompt, pos))
          << "prefix hit with wrong contents at pos " << pos;
    }
    prompts_.push_back(prompt);
  }

  void step() {
    std::vector<BatchItem> items;
    for (SeqId id : m_.sequences()) {
      const int64_t pending = m_.num_tokens(id) - m_.num_computed_tokens(id);
      if (pending > 0 && pick(0, 3)) items.push_back({id, pick(1, static_cast<int>(pending))});
    }
    if (items.empty()) return;
    HostBatch b = build_batch(m_, items);
    size_t row = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const SeqId id = items[i].seq;
      const auto table = m_.block_table(id);
      const auto tokens = m_.tokens(id);
      ASSERT_EQ(b.seq_lens[i], m_.num_computed_tokens(id) + items[i].num_new_tokens);
      for (int64_t j = 0; j < static_cast<int64_t>(table.size()) && j * bs_ < b.seq_lens[i]; ++j) {
        ASSERT_EQ(b.block_tables[i * b.max_blocks_per_seq + j], table[j]);
      }
      for (int64_t n = 0; n < items[i].num_new_tokens; ++n, ++row) {
        const int64_t pos = b.positions[row];
        const int64_t slot = b.slot_mapping[row];
        ASSERT_EQ(slot, int64_t{table[pos / bs_]} * bs_ + pos % bs_);
        // Copy-on-write never leaves a shared block written.
        ASSERT_EQ(m_.ref_count(static_cast<int32_t>(slot / bs_)), 1) << "write into a shared block";
        slots_[slot] = prefix_identity(tokens, pos);
      }
    }
    for (const BatchItem& it : items)
      m_.mark_computed(it.seq, m_.num_computed_tokens(it.seq) + it.num_new_tokens);
  }

  std::vector<SeqId> computed_sequences() {
    std::vector<SeqId> ids;
    for (SeqId id : m_.sequences()) {
      if (m_.num_computed_tokens(id) == m_.num_tokens(id)) ids.push_back(id);
    }
    return ids;
  }

  void append() {
    const auto ids = computed_sequences();
    if (ids.empty()) return;
    const SeqId id = ids[pick(0, static_cast<int>(ids.size()) - 1)];
    std::vector<TokenId> more(pick(1, 3));
    for (auto& t : more) t = pick(0, 5);
    if (!m_.can_append(id, static_cast<int64_t>(more.size()))) return;
    for (const BlockCopy& c : m_.append(id, more)) {
      for (int i = 0; i < bs_; ++i) slots_[int64_t{c.dst} * bs_ + i] = slots_[int64_t{c.src} * bs_ + i];
    }
  }

  void fork() {
    const auto ids = computed_sequences();
    if (ids.empty()) return;
    m_.fork(ids[pick(0, static_cast<int>(ids.size()) - 1)], next_id_++);
  }

  void finish() {
    const auto ids = m_.sequences();
    if (ids.empty()) return;
    const SeqId id = ids[pick(0, static_cast<int>(ids.size()) - 1)];
    if (pick(0, 1)) {
      const auto tokens = m_.tokens(id);
      const std::vector<TokenId> expect(tokens.begin(), tokens.end());
      ASSERT_EQ(m_.preempt(id), expect);
      prompts_.push_back(expect);  // recomputation would re-submit these
    } else {
      m_.free(id);
    }
  }

  void check_invariants() {
    std::map<int32_t, int> owners;
    for (SeqId id : m_.sequences()) {
      const auto table = m_.block_table(id);
      ASSERT_EQ(static_cast<int64_t>(table.size()), m_.blocks_for_tokens(m_.num_tokens(id)));
      std::set<int32_t> seen;
      for (int32_t b : table) {
        ASSERT_TRUE(seen.insert(b).second) << "a sequence holds block " << b << " twice";
        ++owners[b];
      }
    }
    int used = 0;
    for (int32_t b = 0; b < m_.num_blocks(); ++b) {
      const int expected = owners.count(b) ? owners[b] : 0;
      ASSERT_EQ(m_.ref_count(b), expected) << "block " << b;
      used += expected > 0;
    }
    ASSERT_EQ(used + m_.num_free_blocks(), m_.num_blocks());
  }

  BlockManager m_;
  int bs_;
  std::vector<uint64_t> slots_;
  std::mt19937_64 rng_;
  std::vector<std::vector<TokenId>> prompts_;
  SeqId next_id_ = 0;
};

TEST(BlockManagerProperty, RandomOperationsKeepInvariants) {
  const uint64_t seed = test::run_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int block_size : {1, 2, 3, 16}) {
    for (int round = 0; round < 4; ++round) {
      Simulation sim(24 + 8 * round, block_size, seed + static_cast<uint64_t>(block_size * 100 + round));
      sim.run(1500);
      if (HasFatalFailure()) return;
    }
  }
}

}  // namespace
}  // namespace pagedattn
