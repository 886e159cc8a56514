#pragma once
// Divergence watch: each training step's per-sample losses and its updated parameters are
// checked for a NaN or an infinity. The first one found is recorded as
//   flag = min(flag, step·4 + code)   code 0: loss NaN, 1: loss ±inf, 2: parameter NaN, 3: parameter ±inf
// in an int64 flag that starts at kAllFinite: the earliest step wins and, within a step, losses
// before parameters and NaN before infinity. No launch of its own: softmax-cross-entropy records
// the losses and Adam the parameters as they write them (finite_check.cuh), and their CPU twins
// call the scan below. The trainer reads the flag once per epoch, with the epoch's totals.
#include <cstddef>
#include <cstdint>
#include <limits>

namespace mnist {

constexpr std::int64_t kAllFinite = std::numeric_limits<std::int64_t>::max();

enum NonFiniteCode : int { kLossNaN = 0, kLossInf = 1, kParamNaN = 2, kParamInf = 3 };
constexpr int kNonFiniteCodes = 4;

// The step and the code of a recorded flag (not kAllFinite).
inline std::int64_t non_finite_step(std::int64_t flag) { return flag / kNonFiniteCodes; }
inline int non_finite_code(std::int64_t flag) { return static_cast<int>(flag % kNonFiniteCodes); }
// "loss is NaN", "loss is infinite", "a parameter is NaN", "a parameter is infinite".
const char* describe_non_finite(int code);

namespace twin {
// kAllFinite when every value is finite, else step·4 + the lowest code found: what the kernels
// leave in a flag that held kAllFinite. Either array may be empty (null, 0).
std::int64_t finite_check(const float* losses, std::size_t loss_count, const float* params, std::size_t param_count,
                          std::int64_t step);
}  // namespace twin

}  // namespace mnist
