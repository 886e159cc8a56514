// BatchedModel (include/mnist/cli/batched_model.h): one thread takes the queued requests, up to
// max_batch, after the first of them has waited the window, and runs them as one batch.
#include "mnist/cli/batched_model.h"

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <utility>

#include "mnist/core/mnist.h"

namespace mnist {

BatchedModel::BatchedModel(std::unique_ptr<Trainer> trainer, std::chrono::microseconds window, int max_batch)
    : trainer_(std::move(trainer)), window_(window), max_batch_(std::max(1, max_batch)), thread_([this] { run(); }) {}

BatchedModel::~BatchedModel() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (Request& request : queue_)
    request.answer.set_exception(std::make_exception_ptr(std::runtime_error("the server is stopping")));
}

std::vector<float> BatchedModel::logits(std::vector<std::uint8_t> pixels) {
  if (pixels.size() != std::size_t(kPixels)) throw std::invalid_argument("a digit is 784 pixels");
  std::future<std::vector<float>> answer;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw std::runtime_error("the server is stopping");
    queue_.push_back(Request{std::move(pixels), {}});
    answer = queue_.back().answer.get_future();
  }
  wake_.notify_one();
  return answer.get();
}

BatchedModel::Counts BatchedModel::counts() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counts_;
}

void BatchedModel::run() {
  std::vector<Request> batch;
  std::vector<std::uint8_t> pixels, labels;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      // The first request waits the window for others, unless the batch fills first.
      const auto deadline = std::chrono::steady_clock::now() + window_;
      wake_.wait_until(lock, deadline, [&] { return stopping_ || int(queue_.size()) >= max_batch_; });
      if (stopping_) return;
      const int count = std::min<int>(int(queue_.size()), max_batch_);
      for (int i = 0; i < count; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      counts_.requests += count;
      counts_.batches += 1;
      counts_.largest_batch = std::max(counts_.largest_batch, count);
    }
    const int count = int(batch.size());
    pixels.clear();
    for (const Request& request : batch) pixels.insert(pixels.end(), request.pixels.begin(), request.pixels.end());
    labels.assign(std::size_t(count), 0);  // unused: logits only
    try {
      const std::vector<float> all = trainer_->logits(ImageSlice{pixels.data(), labels.data(), count});
      for (int i = 0; i < count; ++i)
        batch[i].answer.set_value(std::vector<float>(all.begin() + std::ptrdiff_t(i) * kClasses,
                                                     all.begin() + std::ptrdiff_t(i + 1) * kClasses));
    } catch (...) {
      for (Request& request : batch) request.answer.set_exception(std::current_exception());
    }
    batch.clear();
  }
}

}  // namespace mnist
