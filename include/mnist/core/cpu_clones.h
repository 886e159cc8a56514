#pragma once
// MNIST_CPU_CLONES on a hot loop of the CPU path: GCC builds the function twice, for AVX2 + FMA
// (x86-64-v3) and for any x86-64, and the loader picks one for the CPU it runs on. Where std::fma
// is one instruction the loops vectorize; elsewhere it is a libm call. Both give the same bits:
// fma, sqrt and division are exactly rounded, and no other product is contracted into an add.
// (Other compilers and processors: one build.) A function it inlines must be always_inline to
// be compiled for each clone. Not under ThreadSanitizer: the clones' resolver runs while the
// program is loaded, before TSan's runtime is set up, and the instrumented resolver crashes.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define MNIST_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MNIST_CPU_CLONES
#endif
