#include "engine/scheduler.h"

#include <algorithm>

#include "pagedattn/error.h"

namespace pagedattn::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAborted:
      return "aborted";
  }
  return "?";
}

Scheduler::Scheduler(SchedulerConfig config, BlockManager& blocks) : config_(config), blocks_(blocks) {
  PA_CHECK(config_.max_num_seqs >= 1, "max_num_seqs must be >= 1, got ", config_.max_num_seqs);
  PA_CHECK(config_.max_num_batched_tokens >= 1, "max_num_batched_tokens must be >= 1, got ",
           config_.max_num_batched_tokens);
}

void Scheduler::add(std::unique_ptr<Request> request) {
  waiting_.push_back(std::move(request));
}

void Scheduler::preempt(size_t index) {
  std::unique_ptr<Request> r = std::move(running_[index]);
  running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(index));
  blocks_.preempt(r->id);  // computed full blocks stay in the prefix cache: recomputation often hits them
  ++r->preemptions;
  ++stats_.preemptions;
  waiting_.push_front(std::move(r));
}

std::vector<ScheduledItem> Scheduler::schedule(std::vector<BlockCopy>& copies) {
  std::vector<ScheduledItem> items;
  int64_t budget = config_.max_num_batched_tokens;
  // Running requests first, in admission order: a sampled token joins the block table (a new block when the
  // last is full; freed by preempting the latest-admitted requests), then the next tokens to compute.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Request* r = running_[i].get();
    const int64_t known = r->num_tokens(), in_table = blocks_.num_tokens(r->id);
    bool preempted_self = false;
    if (in_table < known) {
      while (!blocks_.can_append(r->id, known - in_table)) {
        const bool self = running_.size() - 1 == i;
        preempt(running_.size() - 1);
        if (self) {
          preempted_self = true;
          break;
        }
      }
      if (preempted_self) break;  // it was the last running request: nothing after it
      std::vector<TokenId> pending;
      for (int64_t t = in_table; t < known; ++t) pending.push_back(r->token(t));
      const auto c = blocks_.append(r->id, pending);
      copies.insert(copies.end(), c.begin(), c.end());
    }
    const int64_t computed = blocks_.num_computed_tokens(r->id);
    const int64_t n = std::min(known - computed, budget);
    if (n > 0) {
      items.push_back({r, n, computed + n == known});
      budget -= n;
    }
    ++i;
  }
  // Then waiting requests, while the budget, max_num_seqs and the pool allow.
  while (!waiting_.empty() && budget > 0 && static_cast<int>(running_.size()) < config_.max_num_seqs) {
    Request* r = waiting_.front().get();
    const int64_t known = r->num_tokens();
    if (!blocks_.can_allocate(known)) {
      if (running_.empty() && blocks_.blocks_for_tokens(known) > blocks_.num_blocks()) {
        // It can never fit: refuse it, keep serving the others.
        r->finish = FinishReason::kAborted;
        r->finish_detail = "needs " + std::to_string(blocks_.blocks_for_tokens(known)) +
                           " blocks; the pool has " + std::to_string(blocks_.num_blocks());
        aborted_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
        continue;
      }
      break;
    }
    std::vector<TokenId> tokens(static_cast<size_t>(known));
    for (int64_t t = 0; t < known; ++t) tokens[static_cast<size_t>(t)] = r->token(t);
    const int64_t cached = blocks_.allocate(r->id, tokens);
    stats_.prefix_hit_tokens += cached;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    const int64_t n = std::min(known - cached, budget);
    items.push_back({r, n, cached + n == known});
    budget -= n;
  }
  ++stats_.steps;
  for (const auto& it : items) stats_.scheduled_tokens += it.num_new_tokens;
  stats_.max_running = std::max<int64_t>(stats_.max_running, static_cast<int64_t>(running_.size()));
  return items;
}

std::vector<std::unique_ptr<Request>> Scheduler::complete(const std::vector<ScheduledItem>& items,
                                                          const std::vector<int32_t>& sampled, double now_s,
                                                          const std::vector<int64_t>& eos_token_ids) {
  PA_CHECK(sampled.size() == items.size(), "Scheduler::complete: ", sampled.size(), " samples for ",
           items.size(), " items");
  for (size_t i = 0; i < items.size(); ++i) {
    Request* r = items[i].request;
    blocks_.mark_computed(r->id, blocks_.num_computed_tokens(r->id) + items[i].num_new_tokens);
    if (!items[i].samples) continue;
    const int32_t t = sampled[i];
    r->output.push_back(t);
    r->token_times_s.push_back(now_s);
    if (r->first_token_s < 0) r->first_token_s = now_s;
    const bool eos = std::find(eos_token_ids.begin(), eos_token_ids.end(), t) != eos_token_ids.end();
    const auto& stop = r->params.stop_token_ids;
    if ((eos && !r->params.ignore_eos) || std::find(stop.begin(), stop.end(), t) != stop.end()) {
      r->finish = FinishReason::kStop;
    } else if (static_cast<int>(r->output.size()) >= r->params.max_tokens ||
               r->num_tokens() >= config_.max_model_len) {
      r->finish = FinishReason::kLength;
    }
  }
  std::vector<std::unique_ptr<Request>> done = std::move(aborted_);
  aborted_.clear();
  for (size_t i = 0; i < running_.size();) {
    if (running_[i]->finish != FinishReason::kNone) {
      running_[i]->finish_s = now_s;
      blocks_.free(running_[i]->id);
      done.push_back(std::move(running_[i]));
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  return done;
}

}  // namespace pagedattn::engine
