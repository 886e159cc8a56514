#pragma once
// RAII owners for device memory, streams, events and the cuBLAS and cuDNN handles. Nothing on the
// device is freed by hand: every owner releases what it holds in its destructor.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mnist/core/check.h"

namespace mnist {

// Number of usable CUDA devices; 0 when there is no device, no driver or a driver too old.
int cuda_device_count();
// Why cuda_device_count() is 0, in the CUDA runtime's words ("cudaErrorInsufficientDriver: CUDA
// driver version is insufficient for CUDA runtime version"); empty when a device is usable.
std::string cuda_device_absence();
// With MNIST_RESET_DEVICE_AT_EXIT=1 in the environment, destroys this process's CUDA context
// (cudaDeviceReset), else does nothing. compute-sanitizer's memcheck reports leaks only when the
// context is destroyed, which a plain exit does not do: `mnist` and the test executables call
// this last, and profiling/gpu_check.sh sets the variable for its sanitizer runs.
void reset_device_if_asked();

// "out of device memory allocating 1.2 GiB": the CudaError of a failed DeviceBuffer allocation.
inline std::string out_of_memory_message(std::size_t bytes) {
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return "out of device memory allocating " + std::to_string(bytes) + " bytes";
  double size = double(bytes) / 1024.0;
  int unit = 0;
  while (size >= 1024.0 && unit < 4) size /= 1024.0, ++unit;
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", size, units[unit]);
  return std::string("out of device memory allocating ") + text;
}

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Out of memory is a CudaError with out_of_memory() and the size in its message.
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    if (count_ == 0) return;
    const cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&data_), bytes());
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it so the next checked launch does not report it again
      throw CudaError(out_of_memory_message(bytes()), true);
    }
    MNIST_CHECK(status);
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);  // never throws from a destructor; errors surface at the next checked call
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      if (data_) cudaFree(data_);
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }

  // upload() and fill_bytes() are set-up helpers: they wait for all device work first (the
  // legacy stream they copy on is not ordered after a non-blocking stream's kernels, which may
  // still be reading the old contents) and return only when the device holds the data, so work
  // launched next on any stream sees it.
  void upload(const std::vector<T>& host) {
    if (host.size() != count_) throw std::invalid_argument("DeviceBuffer::upload: size mismatch");
    if (count_ == 0) return;
    MNIST_CHECK(cudaDeviceSynchronize());
    MNIST_CHECK(cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice));
    MNIST_CHECK(cudaDeviceSynchronize());
  }
  // Waits for all device work first, so results of kernels on other streams are included.
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_ > 0) MNIST_CHECK(cudaDeviceSynchronize());
    if (count_ > 0) MNIST_CHECK(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  // Fill every byte with `byte` (0xFF turns floats into NaN: the poison of the tests).
  void fill_bytes(int byte) {
    if (count_ == 0) return;
    MNIST_CHECK(cudaDeviceSynchronize());
    MNIST_CHECK(cudaMemset(data_, byte, bytes()));
    MNIST_CHECK(cudaDeviceSynchronize());
  }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

class Stream {
 public:
  Stream() { MNIST_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() {
    if (stream_) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void synchronize() const { MNIST_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() { MNIST_CHECK(cudaEventCreate(&event_)); }
  ~Event() {
    if (event_) cudaEventDestroy(event_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream) { MNIST_CHECK(cudaEventRecord(event_, stream)); }
  // Milliseconds from `start` to this event (both must have completed).
  float elapsed_ms_since(const Event& start) const {
    MNIST_CHECK(cudaEventSynchronize(event_));
    float ms = 0.f;
    MNIST_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
    return ms;
  }

 private:
  cudaEvent_t event_ = nullptr;
};

class CublasHandle {
 public:
  CublasHandle() { MNIST_CHECK(cublasCreate(&handle_)); }
  explicit CublasHandle(cudaStream_t stream) : CublasHandle() { MNIST_CHECK(cublasSetStream(handle_, stream)); }
  ~CublasHandle() {
    if (handle_) cublasDestroy(handle_);
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

// Owns a cuDNN handle (the cuDNN twin of CublasHandle). The handle carries
// the stream that every cuDNN call made with it runs on.
class CudnnHandle {
 public:
  CudnnHandle() { MNIST_CHECK(cudnnCreate(&handle_)); }
  explicit CudnnHandle(cudaStream_t stream) : CudnnHandle() { MNIST_CHECK(cudnnSetStream(handle_, stream)); }
  ~CudnnHandle() {
    if (handle_) cudnnDestroy(handle_);
  }
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
  cudnnHandle_t get() const { return handle_; }

 private:
  cudnnHandle_t handle_ = nullptr;
};

// cuBLAS gets a workspace of its own, so that it never allocates while a graph is being captured
// (32 MiB: what the cuBLAS documentation recommends for Hopper).
constexpr std::size_t kCublasWorkspaceBytes = std::size_t(32) << 20;

// Host ↔ device copies on a stream that wait for the copy: set-up, checkpoints, one-off
// evaluation slices and tests, never inside a training step. Waiting also keeps pageable host
// memory valid for as long as the copy reads it.
template <class T>
void copy_to_device(T* device, const T* host, std::size_t count, cudaStream_t stream) {
  if (count == 0) return;
  MNIST_CHECK(cudaMemcpyAsync(device, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
  MNIST_CHECK(cudaStreamSynchronize(stream));
}
template <class T>
std::vector<T> copy_to_host(const T* device, std::size_t count, cudaStream_t stream) {
  std::vector<T> host(count);
  if (count == 0) return host;
  MNIST_CHECK(cudaMemcpyAsync(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
  MNIST_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// Into `host`, in the memory it already has where that is large enough (resize keeps the
// capacity); enqueued on the stream, not waited for.
template <class T>
void enqueue_copy_to_host(const DeviceBuffer<T>& device, std::vector<T>& host, cudaStream_t stream) {
  host.resize(device.size());
  if (!host.empty())
    MNIST_CHECK(cudaMemcpyAsync(host.data(), device.data(), device.bytes(), cudaMemcpyDeviceToHost, stream));
}

// Thrust's temporary storage for the shuffle, kept from epoch to epoch. Thrust would otherwise
// cudaMalloc and cudaFree it on every sort, and cudaFree waits for the whole device. The sort
// asks for the same blocks every epoch, so after the first epoch nothing is allocated. Reusing a
// block is safe because all its users run in order on the one stream.
class ScratchAllocator {
 public:
  using value_type = char;

  char* allocate(std::ptrdiff_t bytes) {
    const std::size_t size = std::max<std::size_t>(std::size_t(bytes), 1);
    for (Block& block : blocks_) {
      if (!block.in_use && block.memory.size() >= size) {
        block.in_use = true;
        return block.memory.data();
      }
    }
    blocks_.push_back(Block{DeviceBuffer<char>(size), true});
    return blocks_.back().memory.data();
  }
  void deallocate(char* pointer, std::size_t) noexcept {
    for (Block& block : blocks_)
      if (block.memory.data() == pointer) block.in_use = false;
  }

 private:
  struct Block {
    DeviceBuffer<char> memory;
    bool in_use;
  };
  std::vector<Block> blocks_;
};

}  // namespace mnist
