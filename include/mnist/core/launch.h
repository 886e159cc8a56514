#pragma once
// Launch geometry of the element-wise kernels: blocks of kBlockThreads, and a grid of at most
// kMaxGridBlocks (H100: 132 SMs × 8 resident blocks of 256, ×4); each kernel's grid-stride loop
// covers any size beyond that.
#include <cstdint>

namespace mnist {

constexpr int kBlockThreads = 256;
constexpr std::int64_t kMaxGridBlocks = 4096;

// Blocks for `work` items of one thread each: at least 1 (a launch of none is an error), at
// most kMaxGridBlocks.
inline int grid_blocks(std::int64_t work) {
  const std::int64_t blocks = (work + kBlockThreads - 1) / kBlockThreads;
  return static_cast<int>(blocks < 1 ? 1 : blocks < kMaxGridBlocks ? blocks : kMaxGridBlocks);
}

}  // namespace mnist
