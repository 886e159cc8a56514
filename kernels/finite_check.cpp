// The scan of the divergence watch (finite_check.h), for the CPU twins of softmax-cross-entropy
// and Adam: the lowest code of any NaN or infinity in the losses and the parameters, folded with
// the step as the kernels record it. Classified by the bits (exponent all ones), so no
// floating-point mode can change the answer.
#include <cstdint>
#include <cstring>

#include "mnist/ops/finite_check.h"

namespace mnist {

const char* describe_non_finite(int code) {
  switch (code) {
    case kLossNaN: return "loss is NaN";
    case kLossInf: return "loss is infinite";
    case kParamNaN: return "a parameter is NaN";
    case kParamInf: return "a parameter is infinite";
    default: return "a value is not finite";
  }
}

namespace twin {
namespace {

std::uint32_t bits_of(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

// kNonFiniteCodes when every value is finite, else `nan_code` (a NaN was seen) or `nan_code + 1`.
int scan(const float* values, std::size_t n, int nan_code) {
  // The common case first, branch-free so that it vectorises: is any exponent all ones?
  std::uint32_t any = 0;
  for (std::size_t i = 0; i < n; ++i) any |= std::uint32_t((bits_of(values[i]) & 0x7f800000u) == 0x7f800000u);
  if (!any) return kNonFiniteCodes;
  int found = kNonFiniteCodes;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t bits = bits_of(values[i]);
    if ((bits & 0x7f800000u) != 0x7f800000u) continue;  // finite
    if (bits & 0x007fffffu) return nan_code;            // NaN: nothing in this array ranks lower
    found = nan_code + 1;
  }
  return found;
}

}  // namespace

std::int64_t finite_check(const float* losses, std::size_t loss_count, const float* params, std::size_t param_count,
                          std::int64_t step) {
  int code = scan(losses, loss_count, kLossNaN);
  if (code == kNonFiniteCodes) code = scan(params, param_count, kParamNaN);
  return code == kNonFiniteCodes ? kAllFinite : step * kNonFiniteCodes + code;
}

}  // namespace twin
}  // namespace mnist
