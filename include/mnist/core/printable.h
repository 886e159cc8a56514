#pragma once
// A file name as a message or an output line shows it: control bytes (below 0x20, and 0x7F)
// written as \xNN, everything else (UTF-8 included) as it is. A name can hold any byte but
// '/' and NUL, so without this a file called "a.png: 3 (p=0.999)\nb.png" would forge a line of
// `mnist predict`, and an escape code in a name would reach the terminal.
#include <string>

namespace mnist {

// A byte as two upper-case hex digits: 0x0A is "0A".
inline std::string hex_byte(unsigned char byte) {
  const char* hex = "0123456789ABCDEF";
  return {hex[byte >> 4], hex[byte & 15]};
}

inline std::string printable(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    out += byte >= 0x20 && byte != 0x7f ? std::string(1, c) : "\\x" + hex_byte(byte);
  }
  return out;
}

}  // namespace mnist
