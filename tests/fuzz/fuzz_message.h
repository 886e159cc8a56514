#pragma once
// What every harness asks of a refusal: one line of printable ASCII that starts with the path,
// "<path>: <what>", whatever bytes the input held (no line break, no terminal control code).
#include <cstdio>
#include <cstdlib>
#include <string>

namespace fuzz {

[[noreturn]] inline void broken(const char* harness, const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "%s: %s %s\n", harness, what, detail.c_str());
  std::abort();
}

inline void check_message(const char* harness, const std::string& path, const std::string& message) {
  if (message.rfind(path + ": ", 0) != 0) broken(harness, "message does not start with the path:", message);
  for (char c : message)
    if (c < 0x20 || c >= 0x7f) broken(harness, "message is not one line of printable ASCII:", message);
}

}  // namespace fuzz
