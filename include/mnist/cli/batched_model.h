#pragma once
// A model shared by the threads of `mnist serve`: concurrent requests are gathered into one
// forward pass. One thread owns the trainer (and so the device); a request waits in a queue until
// that thread takes it with the others that arrived within the batching window.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "mnist/train/trainer.h"

namespace mnist {

class BatchedModel {
 public:
  // The window: how long the first request of a batch waits for others to join it (0: a batch is
  // whatever is queued when the previous one ends). max_batch bounds the images of one pass.
  BatchedModel(std::unique_ptr<Trainer> trainer, std::chrono::microseconds window, int max_batch);
  ~BatchedModel();  // stops the thread; queued requests get an exception
  BatchedModel(const BatchedModel&) = delete;
  BatchedModel& operator=(const BatchedModel&) = delete;

  // The 10 logits of one prepared 28×28 digit (784 bytes, white on black). Blocks until its batch
  // has run; rethrows what the forward pass threw. Safe from any thread.
  std::vector<float> logits(std::vector<std::uint8_t> pixels);

  struct Counts {
    long requests = 0, batches = 0;
    int largest_batch = 0;
  };
  Counts counts() const;

 private:
  struct Request {
    std::vector<std::uint8_t> pixels;
    std::promise<std::vector<float>> answer;
  };
  void run();

  std::unique_ptr<Trainer> trainer_;
  const std::chrono::microseconds window_;
  const int max_batch_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Request> queue_;
  bool stopping_ = false;
  Counts counts_;
  std::thread thread_;  // last: starts once everything above is set
};

}  // namespace mnist
