#pragma once
// RAII owners of the CUDA objects a training epoch replays: captured graphs, and NVTX ranges
// that name its parts on the Nsight Systems timeline.
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>

#include <string>
#include <utility>

#include "mnist/core/check.h"

namespace mnist {

// A named range on the Nsight Systems timeline, closed when the scope ends (exceptions included).
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  explicit NvtxRange(const std::string& name) : NvtxRange(name.c_str()) {}
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

// The graph as captured; only needed until it is instantiated.
class Graph {
 public:
  Graph() = default;
  ~Graph() {
    if (graph_) cudaGraphDestroy(graph_);
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  cudaGraph_t* out() { return &graph_; }
  cudaGraph_t get() const { return graph_; }

 private:
  cudaGraph_t graph_ = nullptr;
};

// An executable graph: the launches that `record` makes on `stream`, captured once and
// replayed by launch(). The kernels' pointer arguments are frozen at capture, so every buffer
// the recorded work touches must keep its address for the life of the graph.
class GraphExec {
 public:
  GraphExec() = default;
  ~GraphExec() {
    if (exec_) cudaGraphExecDestroy(exec_);
  }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  GraphExec(GraphExec&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
  GraphExec& operator=(GraphExec&& other) noexcept {
    if (this != &other) {
      if (exec_) cudaGraphExecDestroy(exec_);
      exec_ = std::exchange(other.exec_, nullptr);
    }
    return *this;
  }

  template <class Record>
  static GraphExec capture(cudaStream_t stream, Record&& record) {
    // Thread-local mode: an unsafe call (cudaMalloc, a synchronisation) made by this thread
    // while capturing fails loudly instead of silently breaking the graph.
    MNIST_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      record();
    } catch (...) {
      // End the capture so the stream is usable again; the error in flight is the one to report.
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(stream, &broken);
      if (broken) cudaGraphDestroy(broken);
      cudaGetLastError();  // the failed capture is not this error's business: clear it
      throw;
    }
    Graph graph;
    MNIST_CHECK(cudaStreamEndCapture(stream, graph.out()));
    GraphExec exec;
    MNIST_CHECK(cudaGraphInstantiate(&exec.exec_, graph.get(), 0));
    return exec;
  }

  explicit operator bool() const { return exec_ != nullptr; }
  void launch(cudaStream_t stream) const { MNIST_CHECK(cudaGraphLaunch(exec_, stream)); }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace mnist
