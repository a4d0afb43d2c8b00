// Configuration of the inference core (batching, queues, input policy), filled from flags or a
// config file by server/main.cc and printed at start-up.
#pragma once

#include <cstdint>
#include <string>

namespace tpserve::server {

struct CoreConfig {
  // Directory of the model repository ("" keeps models in memory only).
  std::string model_dir;
  // A model of the repository that fails its checks at start: false (default) refuses to start
  // (DATA_LOSS naming the file); true logs it, moves its directory aside (.damaged-*) and serves the rest.
  bool skip_damaged_models = false;
  // Most samples in one launch, and in one request (a larger request is INVALID_ARGUMENT).
  int64_t max_batch_size = 4096;
  // How long the first request of a batch may wait for others to merge with it. 0 (greedy): a
  // free worker launches at once with every compatible request already waiting, so a lone
  // request pays no delay while a busy server still merges what queued up during a launch.
  int64_t max_queue_delay_us = 0;
  // Requests admitted but not yet launched, over all models; beyond it: RESOURCE_EXHAUSTED.
  int64_t max_queued_requests = 1024;
  // Input bytes (x1, x2, grad_out as float32) of those requests; beyond: RESOURCE_EXHAUSTED.
  int64_t max_queued_bytes = int64_t{4} << 30;
  // Non-finite values (NaN, +-Inf) in x1, x2, grad_out: rejected (INVALID_ARGUMENT) or passed on.
  bool reject_non_finite = true;
  // Largest weight gradient returned inline by a unary Backward (bigger: use BackwardChunked).
  int64_t max_inline_grad_bytes = 4 << 20;
  // Page-locked host memory for unary Forward's tensors (HostPool leases, reused); past it, leases
  // are ordinary memory (the worker then gathers them into its own page-locked staging).
  int64_t max_pinned_host_bytes = int64_t{256} << 20;
  // Paths (instructions) a created model may have; more: INVALID_ARGUMENT before any work.
  int64_t max_paths = 16384;
  // The memory budget (memory_budget.h); 0: half of RAM (or of the cgroup's limit).
  int64_t max_memory_bytes = 0;
  // Network models (Predict, TrainStep): most nodes and directed edges in one request's graphs
  // (more: INVALID_ARGUMENT naming the limit).
  int64_t max_graph_nodes = 100000;
  int64_t max_graph_edges = 1000000;
  // Network models: a TrainStep's new version is written to the repository (and fsynced) before
  // it is served when it makes this many steps since the version on disk; the others are served
  // from memory at once. 1 (default): every step durable before it answers. N > 1: a crash
  // (kill -9) loses at most the last N-1 steps; a graceful shutdown (Shutdown) saves them.
  int64_t network_save_every = 1;

  std::string DebugString() const;
};

}  // namespace tpserve::server
