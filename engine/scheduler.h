// Continuous batching: each step fills a token budget with the running requests first (decodes, and the next
// chunk of prompts still being prefilled), then admits waiting requests (prefix-cache hits skip their cached
// tokens; a prompt too long for the budget is prefilled in chunks). When the pool runs out, the most recently
// admitted running request is preempted by recomputation (its blocks freed into the prefix cache, the request
// put back at the front of the queue). Sequence ids in the block manager are request ids.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "pagedattn/block_manager.h"

namespace pagedattn::engine {

enum class FinishReason { kNone, kStop, kLength, kAborted };
const char* finish_reason_name(FinishReason r);

struct Request {
  int64_t id = 0;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;  ///< generated tokens
  SamplingParams params;
  uint64_t seed =
      0;  ///< its sampling stream (sample_uniform): SamplingParams::seed, else drawn by the engine
  FinishReason finish = FinishReason::kNone;
  std::string finish_detail;  ///< kAborted: why
  int preemptions = 0;
  double arrival_s = 0, first_token_s = -1, finish_s = -1;  ///< engine clock
  std::vector<double> token_times_s;                        ///< when each output token came out

  int64_t num_tokens() const { return static_cast<int64_t>(prompt.size() + output.size()); }
  int32_t token(int64_t i) const {
    return i < static_cast<int64_t>(prompt.size()) ? prompt[static_cast<size_t>(i)]
                                                   : output[static_cast<size_t>(i) - prompt.size()];
  }
};

struct SchedulerConfig {
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 8192;
  int64_t max_model_len = 4096;
};

/// One request's share of a step: num_new_tokens of its known tokens get computed; `samples`: they reach
/// its last known token, so the step's logits for it draw the next one.
struct ScheduledItem {
  Request* request = nullptr;
  int64_t num_new_tokens = 0;
  bool samples = false;
};

struct SchedulerStats {
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t prefix_hit_tokens = 0;  ///< prompt tokens whose KV came from the prefix cache
  int64_t scheduled_tokens = 0;
  int64_t max_running = 0;  ///< the most requests running at once (the admitted concurrency)
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager& blocks);
  void add(std::unique_ptr<Request> request);
  /// The next step's work; `copies` receives the copy-on-write block copies to apply before it runs.
  std::vector<ScheduledItem> schedule(std::vector<BlockCopy>& copies);
  /// After the step ran: records computed tokens, appends sampled tokens (sampled[i] for items[i] that
  /// sample), finishes requests. Returns the requests that finished in this step (moved out).
  std::vector<std::unique_ptr<Request>> complete(const std::vector<ScheduledItem>& items,
                                                 const std::vector<int32_t>& sampled, double now_s,
                                                 const std::vector<int64_t>& eos_token_ids);
  bool idle() const { return waiting_.empty() && running_.empty(); }
  size_t num_running() const { return running_.size(); }
  size_t num_waiting() const { return waiting_.size(); }
  const SchedulerStats& stats() const { return stats_; }

 private:
  void preempt(size_t index);
  SchedulerConfig config_;
  BlockManager& blocks_;
  std::deque<std::unique_ptr<Request>> waiting_;
  std::vector<std::unique_ptr<Request>> running_;  // admission order: the last is preempted first
  std::vector<std::unique_ptr<Request>> aborted_;  // refused at admission, reported by the next complete()
  SchedulerStats stats_;
};

}  // namespace pagedattn::engine
