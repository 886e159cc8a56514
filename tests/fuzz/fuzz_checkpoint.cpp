// libFuzzer harness for the checkpoint reader (decode_checkpoint in host/io/checkpoint.cpp, which
// read_checkpoint calls on a file's bytes). Each input is decoded twice:
//   1. as it is: mostly the checks before and around the CRC-32 (truncated or damaged files);
//   2. "resealed", its last four bytes replaced by the CRC-32 of the rest, as a writer of those
//      bytes would have made them: this reaches the layout parser behind the checksum, which a
//      fuzzer could otherwise only enter by guessing a 32-bit checksum.
// Every decode must either return a checkpoint consistent with itself, which serializes and
// decodes back to the same thing, or throw CheckpointError with a one-line "<path>: <what>"
// message of printable ASCII (fuzz_message.h); anything else (a sanitizer report, another exception) is a crash.
//
// Build and run: see tests/fuzz/CMakeLists.txt.
#include <zlib.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mnist/io/checkpoint.h"
#include "fuzz_message.h"

namespace {

const std::string kPath = "fuzz.ckpt";

[[noreturn]] void broken(const char* what, const std::string& detail = "") {
  fuzz::broken("fuzz_checkpoint", what, detail);
}

// The parameter count the kind and sizes imply, counted here independently of the reader.
std::uint64_t implied_params(mnist::ModelKind kind, const std::vector<int>& s) {
  if (kind == mnist::ModelKind::kCnn) {  // conv 1→c1 and c1→c2 (k×k), dense (c2·7·7)→h, h→10
    const std::uint64_t c1 = s[3], c2 = s[4], k = s[5], h = s[6];
    return (c1 * k * k + c1) + (c2 * c1 * k * k + c2) + (c2 * 49 * h + h) + (h * 10 + 10);
  }
  std::uint64_t n = 0;
  for (std::size_t l = 0; l + 1 < s.size(); ++l) n += std::uint64_t(s[l]) * s[l + 1] + s[l + 1];
  return n;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

bool same(const mnist::Checkpoint& a, const mnist::Checkpoint& b) {
  return a.state.kind == b.state.kind && a.state.sizes == b.state.sizes && same_bits(a.state.params, b.state.params) &&
         same_bits(a.state.adam_m, b.state.adam_m) && same_bits(a.state.adam_v, b.state.adam_v) &&
         a.state.step == b.state.step && a.epoch == b.epoch &&
         std::memcmp(&a.best_val_accuracy, &b.best_val_accuracy, sizeof(double)) == 0 && a.config == b.config;
}

void check(const mnist::Checkpoint& c) {
  const mnist::ModelState& s = c.state;
  if (s.kind == mnist::ModelKind::kCnn) {
    if (s.sizes.size() != 8 || s.sizes[0] != 1 || s.sizes[1] != 28 || s.sizes[2] != 28 || s.sizes[7] != 10 ||
        s.sizes[5] % 2 == 0)
      broken("accepted impossible CNN sizes");
  } else if (s.kind != mnist::ModelKind::kMlp) {
    broken("accepted an unknown model kind");
  } else if (s.sizes.size() < 2 || s.sizes.front() != 784 || s.sizes.back() != 10) {
    broken("accepted impossible layer sizes");
  }
  for (int width : s.sizes)
    if (width < 1) broken("accepted a layer of width", std::to_string(width));
  const std::uint64_t n = implied_params(s.kind, s.sizes);
  if (s.params.size() != n || s.adam_m.size() != n || s.adam_v.size() != n) broken("arrays do not match the sizes");
  if (s.step < 0 || c.epoch < 0) broken("accepted a negative step or epoch");
  if (!std::isnan(c.best_val_accuracy) && !(c.best_val_accuracy >= 0 && c.best_val_accuracy <= 1))
    broken("accepted best validation accuracy", std::to_string(c.best_val_accuracy));
  if (!c.config.is_object()) broken("accepted a configuration that is not a JSON object");

  // What was read can be written and read back unchanged.
  const std::string text = mnist::serialize_checkpoint(c);
  const mnist::Checkpoint again = mnist::decode_checkpoint(std::vector<std::uint8_t>(text.begin(), text.end()), kPath);
  if (!same(c, again)) broken("serialize/decode round trip changed the checkpoint");
}

void decode(const std::vector<std::uint8_t>& bytes) {
  try {
    check(mnist::decode_checkpoint(bytes, kPath));
  } catch (const mnist::CheckpointError& error) {
    fuzz::check_message("fuzz_checkpoint", kPath, error.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> bytes(data, data + size);
  decode(bytes);

  if (size >= 12) {  // magic + CRC at least
    const std::uint32_t crc = static_cast<std::uint32_t>(crc32(0L, bytes.data(), static_cast<uInt>(size - 4)));
    bool changed = false;
    for (int i = 0; i < 4; ++i) {
      const std::uint8_t byte = static_cast<std::uint8_t>(crc >> (8 * i));
      changed |= bytes[size - 4 + i] != byte;
      bytes[size - 4 + i] = byte;
    }
    if (changed) decode(bytes);
  }
  return 0;
}
