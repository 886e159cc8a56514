#pragma once
// Evaluation reductions over a batch of logits [rows, 10] with labels and per-sample loss:
//   pred[r] = argmax_c logits[r, c] (first maximum wins)
//   totals += { sum_r loss[r], #(pred == label), rows, confusion[label][pred] += 1 }
// Deterministic: the loss is summed in a fixed order, counts are integers.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mnist/core/mnist.h"

namespace mnist {


namespace twin {
// predictions may be null.
void accumulate_metrics(const float* logits, const std::uint8_t* labels, const float* loss, int rows,
                        EvalTotals* totals, std::int32_t* predictions);
}
namespace gpu {
// totals is a device pointer; the launch adds to it.
void accumulate_metrics(const float* logits, const std::uint8_t* labels, const float* loss, int rows,
                        EvalTotals* totals, std::int32_t* predictions, cudaStream_t stream);
}

}  // namespace mnist
