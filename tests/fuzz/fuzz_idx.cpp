// libFuzzer harness for the IDX parsers (host/data/idx.cpp): the fuzzer's bytes are the contents of
// a file, raw or gzip (detected by its magic bytes exactly as load_idx_images/load_idx_labels
// do, since those call the same parse_idx_* functions). Every input must either parse into a
// consistent set or throw DataError with a one-line "<path>: <what>" message of printable ASCII
// (fuzz_message.h); anything else
// (a sanitizer report, another exception, a set that contradicts its header) is a crash.
//
// Build and run: see tests/fuzz/CMakeLists.txt.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mnist/data/idx.h"
#include "fuzz_message.h"

namespace {

const std::string kPath = "fuzz-input";

[[noreturn]] void broken(const char* what, const std::string& detail) { fuzz::broken("fuzz_idx", what, detail); }

void check_message(const mnist::DataError& error) { fuzz::check_message("fuzz_idx", kPath, error.what()); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::vector<std::uint8_t> contents(data, data + size);

  try {
    const mnist::ImageSet images = mnist::parse_idx_images(contents, kPath);
    if (images.pixels.size() != std::size_t{images.count} * mnist::kPixels)
      broken("image set inconsistent", std::to_string(images.count) + " images, " +
                                           std::to_string(images.pixels.size()) + " pixels");
  } catch (const mnist::DataError& error) {
    check_message(error);
  }

  try {
    const std::vector<std::uint8_t> labels = mnist::parse_idx_labels(contents, kPath);
    for (std::uint8_t label : labels)
      if (label > 9) broken("label out of range accepted", std::to_string(label));
  } catch (const mnist::DataError& error) {
    check_message(error);
  }
  return 0;
}
