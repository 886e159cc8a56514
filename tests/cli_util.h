#pragma once
// Running the `mnist` program from a test as a user would (tests/test_checkpoint.cu,
// tests/test_predict.cu). MNIST_BINARY is set by CMakeLists.txt.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

namespace mnist::test {

struct Outcome {
  int status = -1;
  std::string output;  // stdout and stderr together
};

// Runs `binary args` through the shell, stdout and stderr together.
inline Outcome run_program(const std::string& binary, const std::string& args) {
  const std::string command = binary + " " + args + " 2>&1";
  Outcome outcome;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return outcome;
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) outcome.output.append(buffer, n);
  const int raw = pclose(pipe);
  outcome.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return outcome;
}

inline Outcome run_mnist(const std::string& args) { return run_program(MNIST_BINARY, args); }

inline int line_count(const std::string& text) {
  int lines = 0;
  for (char c : text) lines += c == '\n';
  return lines;
}

// A directory under /tmp that no other test (or earlier run) uses; created empty.
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  std::random_device device;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("mnist-" + name + "-" + std::to_string(device()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace mnist::test
