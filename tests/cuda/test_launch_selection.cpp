// choose_launch() is pure host logic: its worked examples (launch_selection.cpp) are checked here, without a
// GPU.
#include <gtest/gtest.h>

#include "cuda/attention/launch_selection.h"
#include "test_util.h"

namespace pagedattn::cuda {
namespace {

LaunchInputs decode(int batch, int context) {
  LaunchInputs in;
  in.sm_count = 132;
  in.num_seqs = batch;
  in.num_tokens = batch;
  in.num_q_heads = 32;
  in.num_kv_heads = 8;
  in.head_dim = 128;
  in.max_query_len = 1;
  in.max_seq_len = context;
  in.resident_decode = 2;
  in.resident_prefill = 2;
  return in;
}

// What the split choice promises, over a sweep of batch shapes, head dims, GQA ratios, residencies and both
// decode and prefill tiles, instead of the counts of today's tuning: the chosen count's modeled time is
// within kSplitTimeMargin of the least over every count the model considers, and no smaller count is (fewer
// partials for the same time). Whether the results are right for every count is the GPU suite's
// CudaSegments test (results agree across 1..64 segments); whether the model picks well is measured by the
// benchmark driver against every forced count (bench/NOTES.md).
TEST(LaunchSelection, ChoosesTheSmallestCountWithinTheMarginOfTheModeledBest) {
  int checked = 0;
  for (bool tma : {false, true}) {
    for (int head_dim : {64, 96, 128, 256}) {
      for (int q_heads : {8, 32, 40}) {
        for (int batch : {1, 2, 3, 7, 16, 33, 64, 256}) {
          for (int context : {1, 63, 512, 4096, 32768, 131072}) {
            for (int query_len : {1, 4, 300}) {
              LaunchInputs in = decode(batch, context);
              in.head_dim = head_dim;
              in.num_q_heads = q_heads;
              in.tma_decode = tma;
              in.wgmma_prefill = tma;
              in.resident_decode = head_dim > 128 ? 1 : 2;
              in.max_query_len = std::min(query_len, context);
              in.num_tokens = int64_t{batch} * in.max_query_len;
              const LaunchChoice c = choose_launch(in);
              const int most = max_modeled_segments(in);
              double best = modeled_split_time(in, 1);
              for (int s = 2; s <= most; ++s) best = std::min(best, modeled_split_time(in, s));
              ASSERT_LE(c.num_segments, most);
              EXPECT_LE(modeled_split_time(in, c.num_segments), kSplitTimeMargin * best)
                  << batch << "x" << context << " q " << in.max_query_len;
              for (int s = 1; s < c.num_segments; ++s) {
                EXPECT_GT(modeled_split_time(in, s), kSplitTimeMargin * best) << batch << "x" << context;
              }
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

// The model's shape, not its constants: a long context on few sequences gains from a split, a grid of many
// waves never does.
TEST(LaunchSelection, SplitsLongFewSequencesAndNotFullGrids) {
  EXPECT_GT(choose_launch(decode(1, 32768)).num_segments, 1);
  LaunchInputs prefill = decode(4, 4096);  // 4 x 4096 causal prefill: thousands of CTAs
  prefill.num_tokens = 4 * 4096;
  prefill.max_query_len = 4096;
  EXPECT_EQ(choose_launch(prefill).shape, TileShape::kPrefill);
  EXPECT_EQ(choose_launch(prefill).num_segments, 1);
}

TEST(LaunchSelection, RespectsLimitsAndDoesNotSplitFullGrids) {
  for (int batch : {1, 2, 3, 7, 16, 33, 64, 100, 256}) {
    for (int context : {1, 17, 512, 4096, 32768, 131072}) {
      const LaunchInputs in = decode(batch, context);
      const LaunchChoice c = choose_launch(in);
      EXPECT_GE(c.num_segments, 1);
      EXPECT_LE(c.num_segments, 64);
      EXPECT_LE(c.num_segments, std::max(1, context / 64)) << "segments shorter than one KV tile";
      if (int64_t{batch} * 8 >= 6 * 264) {
        EXPECT_EQ(c.num_segments, 1) << batch << "x" << context << ": six or more waves need no split";
      }
      EXPECT_EQ(c.workspace_bytes,
                c.num_segments > 1 ? size_t(batch) * 32 * c.num_segments * (128 + 2) * 4 : size_t{0});
      EXPECT_GE(c.grid_tiles * 16, int64_t{batch} * 4) << "grid covers every packed row";
    }
  }
}

TEST(LaunchSelection, ShapesAndUnknownHints) {
  LaunchInputs in = decode(4, 2048);
  in.max_query_len = 100;  // chunks: 100 x 4 rows
  in.num_tokens = 400;
  EXPECT_EQ(choose_launch(in).shape, TileShape::kPrefill);
  in.max_query_len = -1;  // unknown: the prefill shape is correct for any batch; no split without lengths
  in.max_seq_len = -1;
  const LaunchChoice c = choose_launch(in);
  EXPECT_EQ(c.shape, TileShape::kPrefill);
  EXPECT_EQ(c.num_segments, 1);
  in.force_segments = 7;
  EXPECT_EQ(choose_launch(in).num_segments, 7);
  EXPECT_GT(choose_launch(in).workspace_bytes, 0u);
}

// A kernel with the decode tile only (TurboQuant caches) takes it for every query length: a chunk of 100
// tokens x 4 heads is 25 tiles of 16 rows, each sequence's tiles found by the tile search (not one per
// sequence), no persistent launch, and the split model counts the decode tile's residency.
TEST(LaunchSelection, DecodeShapeOnlyKernels) {
  LaunchInputs in = decode(4, 2048);
  in.max_query_len = 100;
  in.num_tokens = 400;
  in.decode_shape_only = true;
  in.wgmma_prefill = true;
  in.tma_decode = true;
  in.resident_prefill = 1;
  const LaunchChoice c = choose_launch(in);
  EXPECT_EQ(c.shape, TileShape::kDecode);
  EXPECT_EQ(c.block_m, 16);
  EXPECT_FALSE(c.one_tile_per_seq);
  EXPECT_GE(c.grid_tiles, 400 * 4 / 16);
  EXPECT_EQ(c.persistent_ctas, 0);
  in.max_query_len = 1;
  in.num_tokens = 4;
  const LaunchChoice d = choose_launch(in);
  EXPECT_EQ(d.shape, TileShape::kDecode);
  EXPECT_TRUE(d.one_tile_per_seq);
}

TEST(LaunchSelection, HopperPrefillTile) {
  LaunchInputs in = decode(4, 4096);
  in.num_tokens = 4 * 4096;
  in.max_query_len = 4096;
  in.wgmma_prefill = true;
  in.resident_prefill = 1;
  LaunchChoice c = choose_launch(in);
  EXPECT_EQ(c.shape, TileShape::kPrefillSm90);
  EXPECT_EQ(c.block_m, 128);
  EXPECT_EQ(c.block_n, 128);
  EXPECT_GE(c.grid_tiles * 128, in.num_tokens * 4);
  // Persistent: one CTA per SM takes the work items; the workspace holds its counter.
  EXPECT_EQ(c.persistent_ctas, 132);
  EXPECT_EQ(c.workspace_bytes, kWorkCounterBytes);
  in.head_dim = 256;
  EXPECT_EQ(choose_launch(in).block_n, 64);
  in.head_dim = 64;
  EXPECT_EQ(choose_launch(in).block_n, 128);
  in.head_dim = 128;
  in.force_segments = 3;  // the partials follow the counter
  EXPECT_EQ(choose_launch(in).workspace_bytes, kWorkCounterBytes + size_t(4 * 4096) * 32 * 3 * (128 + 2) * 4);
  in.force_segments = 0;
  in.max_query_len = 1;  // decode keeps its tile on Hopper too
  in.num_tokens = 4;
  EXPECT_EQ(choose_launch(in).shape, TileShape::kDecode);
  // Segments hold whole 128-key tiles: a short context is not split finer than its tiles.
  in = decode(1, 300);
  in.max_query_len = 300;
  in.num_tokens = 300;
  in.wgmma_prefill = true;
  c = choose_launch(in);
  EXPECT_LE(c.num_segments, 2);
  // Fewer work items than SMs: one CTA each.
  EXPECT_EQ(c.persistent_ctas, c.grid_tiles * 8 * c.num_segments);
}

// Short queries take the TMA decode tile where the caller enables it (a 9.x device and a cache it can read):
// same rows and keys per tile, so the same grid and the same split model, only its own residency; long
// queries keep their prefill tile. No workspace beyond the split's partials.
TEST(LaunchSelection, TmaDecodeTile) {
  LaunchInputs in = decode(64, 4096);
  const LaunchChoice pointer = choose_launch(in);
  in.tma_decode = true;
  const LaunchChoice tma = choose_launch(in);
  EXPECT_EQ(pointer.shape, TileShape::kDecode);
  EXPECT_EQ(tma.shape, TileShape::kDecodeSm90);
  EXPECT_EQ(tma.block_m, 16);
  EXPECT_EQ(tma.block_n, 64);
  EXPECT_EQ(tma.grid_tiles, 64);  // short queries: one tile per sequence
  EXPECT_TRUE(tma.one_tile_per_seq);
  EXPECT_EQ(tma.grid_tiles, pointer.grid_tiles);
  EXPECT_EQ(tma.num_segments, pointer.num_segments);
  // Persistent CTAs exactly where the rule says: more items than resident slots, each short; then as many
  // CTAs as slots (never more than items), with the work counter in front of the partials.
  for (int batch : {16, 33, 64, 256, 1031}) {
    for (int context : {128, 512, 1024, 4096}) {
      LaunchInputs d = decode(batch, context);
      d.tma_decode = true;
      const LaunchChoice k = choose_launch(d);
      const int64_t items = k.grid_tiles * d.num_kv_heads * k.num_segments;
      const int64_t slots = int64_t{d.sm_count} * d.resident_decode;
      const bool short_items = context <= 16 * k.block_n * k.num_segments;
      EXPECT_EQ(k.persistent_ctas > 0, items > slots && short_items) << batch << "x" << context;
      if (k.persistent_ctas > 0) {
        EXPECT_EQ(k.persistent_ctas, std::min(items, slots));
        EXPECT_GE(k.workspace_bytes, kWorkCounterBytes);
      }
      d.persistent_decode = false;
      EXPECT_EQ(choose_launch(d).persistent_ctas, 0);
      d.tma_decode = false;  // the cp.async decode tile is never persistent
      d.persistent_decode = true;
      EXPECT_EQ(choose_launch(d).persistent_ctas, 0);
    }
  }
  in.tma_decode = true;
  in = decode(1, 32768);
  in.tma_decode = true;
  const LaunchChoice split = choose_launch(in);
  EXPECT_EQ(split.shape, TileShape::kDecodeSm90);
  EXPECT_GT(split.num_segments, 1);
  EXPECT_EQ(split.workspace_bytes, size_t(1) * 32 * split.num_segments * (128 + 2) * 4);
  in.max_query_len = 100;  // chunks of 400 rows: the prefill tile
  in.num_tokens = 100;
  EXPECT_EQ(choose_launch(in).shape, TileShape::kPrefill);
}

// 1-byte codes converted in registers gain less from a CTA alone on its SM (kLoneTileTimeConverted): the
// measured case (H100, bench/NOTES.md version 22), fp8 16 x 4096, 128 lone CTAs at 79.2 us against two
// segments at 69.2 us, splits in two; bf16 keeps its lone CTAs; a full grid splits for neither.
TEST(LaunchSelection, ConvertedCodesLeanLessOnLoneCtas) {
  LaunchInputs in = decode(16, 4096);
  in.tma_decode = true;
  EXPECT_EQ(choose_launch(in).num_segments, 1);
  in.converted_kv = true;
  EXPECT_EQ(choose_launch(in).num_segments, 2);
  LaunchInputs full = decode(256, 4096);
  full.tma_decode = true;
  full.converted_kv = true;
  EXPECT_EQ(choose_launch(full).num_segments, 1);
}

// The merge launches early (programmatic dependent launch) only where the device has it and there is a merge.
TEST(LaunchSelection, EarlyMergeLaunch) {
  LaunchInputs in = decode(1, 32768);
  EXPECT_FALSE(choose_launch(in).early_merge_launch);
  in.early_merge_launch = true;
  LaunchChoice c = choose_launch(in);
  EXPECT_GT(c.num_segments, 1);
  EXPECT_TRUE(c.early_merge_launch);
  in.force_segments = 1;
  EXPECT_FALSE(choose_launch(in).early_merge_launch);
}

// A sliding window makes each tile's KV range short whatever the sequence length: one sequence of 131072
// tokens with a 4096-key window is split like a 4096-token context (the window's range), not like 131072;
// the same launch inputs without hints other than the window still size a split.
TEST(LaunchSelection, SlidingWindowSizesTheSplitByTheWindow) {
  LaunchInputs windowed = decode(1, 131072);
  windowed.window_left = 4096;
  LaunchInputs short_ctx = decode(1, 4096 + 1 + 1 + 64);
  EXPECT_EQ(choose_launch(windowed).num_segments, choose_launch(short_ctx).num_segments);
  EXPECT_LT(choose_launch(windowed).num_segments, choose_launch(decode(1, 131072)).num_segments);
  LaunchInputs no_len = windowed;
  no_len.max_seq_len = -1;  // unknown length, known window: still sized
  EXPECT_EQ(choose_launch(no_len).num_segments, choose_launch(windowed).num_segments);
  // A window longer than the sequence changes nothing.
  LaunchInputs wide = decode(16, 512);
  wide.window_left = 100000;
  EXPECT_EQ(choose_launch(wide).num_segments, choose_launch(decode(16, 512)).num_segments);
  EXPECT_EQ(choose_launch(wide).workspace_bytes, choose_launch(decode(16, 512)).workspace_bytes);
}

}  // namespace
}  // namespace pagedattn::cuda

namespace pagedattn::cuda {
namespace {

// A workspace limit caps the split, never the correctness: over the sweep, the choice fits the limit, is the
// best count among those that fit (the same margin rule), equals the unlimited choice when that one fits,
// and a limit below the unsplit launch's need (the persistent prefill's work counter) or below what
// force_segments needs is an error naming it.
TEST(LaunchSelection, WorkspaceLimitCapsTheSplit) {
  int capped = 0;
  for (bool tma : {false, true}) {
    for (int batch : {1, 3, 16, 64}) {
      for (int context : {512, 4096, 131072}) {
        for (int query_len : {1, 300}) {
          LaunchInputs in = decode(batch, context);
          in.tma_decode = in.wgmma_prefill = tma;
          in.max_query_len = std::min(query_len, context);
          in.num_tokens = int64_t{batch} * in.max_query_len;
          const LaunchChoice free = choose_launch(in);
          for (size_t limit : {size_t{256}, size_t{300000}, size_t{4} << 20, free.workspace_bytes}) {
            if (limit == 0) continue;
            LaunchInputs lim = in;
            lim.workspace_limit = limit;
            if (free.workspace_bytes <= limit) {
              const LaunchChoice c = choose_launch(lim);
              EXPECT_EQ(c.num_segments, free.num_segments) << batch << "x" << context << " limit " << limit;
              continue;
            }
            if (free.persistent_ctas > 0 && limit < kWorkCounterBytes) continue;
            const LaunchChoice c = choose_launch(lim);
            const int fits = max_segments_in_workspace(lim, c.persistent_ctas > 0);
            EXPECT_LE(c.workspace_bytes, limit);
            EXPECT_LT(c.num_segments, free.num_segments);
            EXPECT_LE(c.num_segments, fits);
            double best = modeled_split_time(lim, 1);
            for (int s = 2; s <= std::min(fits, max_modeled_segments(lim)); ++s)
              best = std::min(best, modeled_split_time(lim, s));
            EXPECT_LE(modeled_split_time(lim, c.num_segments), kSplitTimeMargin * best);
            ++capped;
          }
        }
      }
    }
  }
  EXPECT_GT(capped, 10);

  LaunchInputs prefill = decode(4, 4096);
  prefill.wgmma_prefill = true;
  prefill.max_query_len = 1024;
  prefill.num_tokens = 4096;
  prefill.workspace_limit = 100;
  EXPECT_ERROR_CONTAINS(choose_launch(prefill),
                        "max_workspace_bytes 100 is below the 256 bytes this launch needs at least (the "
                        "persistent kernel's work counter)");
  LaunchInputs forced = decode(1, 32768);
  forced.force_segments = 32;
  forced.workspace_limit = 20000;  // 1 row x 32 heads x (128 + 2) fp32 = 16640 bytes per segment
  EXPECT_ERROR_CONTAINS(choose_launch(forced),
                        "force_segments 32 needs 532480 bytes of split-KV partials; "
                        "max_workspace_bytes 20000 holds 1 segment(s)");
}

}  // namespace
}  // namespace pagedattn::cuda
