#pragma once
// What every model trains, whatever its layers: four flat buffers of one length in the layout of
// its shape (mlp_shape.h, cnn_shape.h), layer by layer, weights then bias. One Adam launch (or
// loop) updates them all, and a checkpoint stores params and the moments as they are.
// Buffer: std::vector<float> for the CPU models, DeviceBuffer<float> for the GPU ones.
#include <cstddef>

namespace mnist {

template <class Buffer>
struct ParamBuffers {
  Buffer params;  // θ
  Buffer grads;   // d(mean loss)/dθ of the last backward pass
  Buffer adam_m;  // Adam's first moment
  Buffer adam_v;  // Adam's second moment

  ParamBuffers() = default;
  explicit ParamBuffers(std::size_t count) : params(count), grads(count), adam_m(count), adam_v(count) {}
  std::size_t size() const { return params.size(); }
};

}  // namespace mnist
