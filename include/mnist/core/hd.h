#pragma once
// MNIST_HD marks functions shared by the CPU twins and the CUDA kernels:
// __host__ __device__ under nvcc, plain inline functions under a host compiler.
#if defined(__CUDACC__)
#define MNIST_HD __host__ __device__ __forceinline__
#else
#define MNIST_HD inline
#endif
