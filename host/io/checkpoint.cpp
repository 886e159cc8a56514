// Checkpoint files (include/mnist/io/checkpoint.h). Writing is a plain little-endian dump; reading
// checks the trailing CRC-32 first and then walks the header with every length bounded by the
// file's size, so a damaged or hostile file is reported, never trusted.
#include "mnist/io/checkpoint.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <system_error>
#include <utility>

#include "mnist/data/idx.h"
#include "mnist/model/cnn_shape.h"
#include "mnist/model/model.h"
#include "mnist/core/printable.h"
#include "mnist/core/files.h"

namespace fs = std::filesystem;

namespace mnist {
namespace {

constexpr char kMagic[8] = {'M', 'N', 'I', 'S', 'T', 'C', 'K', 'P'};
constexpr std::uint32_t kDtypeF32 = 0;
constexpr std::uint32_t kMaxSizes = 65;              // 64 dense layers: far beyond any real MLP
constexpr std::uint32_t kMaxWidth = 65536;           // what validate() allows for --hidden
constexpr int kMaxCnnKernel = 31;                    // bounds every CNN layer's size in 64 bits
constexpr std::uint32_t kMaxConfigBytes = 1u << 20;  // the JSON is a few hundred bytes
constexpr std::size_t kCrcBytes = 4;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw CheckpointError(printable(path) + ": " + what);
}

std::uint32_t crc32_of(const std::uint8_t* data, std::size_t n, uLong crc = crc32(0L, Z_NULL, 0)) {
  while (n > 0) {  // zlib takes 32-bit lengths
    const uInt now = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    crc = crc32(crc, data, now);
    data += now;
    n -= now;
  }
  return static_cast<std::uint32_t>(crc);
}

std::string hex32(std::uint32_t v) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", v);
  return text;
}

// --- writing ------------------------------------------------------------------------------

// The file is little-endian, and so is every machine this builds for (x86-64, aarch64): the
// float arrays are copied into the file as they lie in memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checkpoints copy little-endian memory as it is");

// Appends fields to a buffer reserved for the whole file up front, so that the ~8 MB of the
// default model's arrays are three memcpy calls, not a push_back per byte.
class Writer {
 public:
  explicit Writer(std::size_t size) { out_.reserve(size); }
  void bytes(const void* data, std::size_t n) { out_.append(static_cast<const char*>(data), n); }
  void u32(std::uint32_t v) { bytes(&v, sizeof v); }
  void u64(std::uint64_t v) { bytes(&v, sizeof v); }
  void f64(double x) { bytes(&x, sizeof x); }
  void f32s(const std::vector<float>& xs) { bytes(xs.data(), sizeof(float) * xs.size()); }
  std::string& text() { return out_; }

 private:
  std::string out_;
};

// --- reading ------------------------------------------------------------------------------

std::uint32_t le32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24;
}
std::uint64_t le64(const std::uint8_t* p) { return std::uint64_t{le32(p)} | std::uint64_t{le32(p + 4)} << 32; }

// The parameter count of a model with these sizes; 64-bit, so no size the header allows can wrap
// (for the CNN, parse_layout bounds the sizes first).
std::uint64_t implied_params(ModelKind kind, const std::vector<int>& sizes) {
  if (kind == ModelKind::kCnn) return CnnShape::from_sizes(sizes).param_count();
  std::uint64_t n = 0;
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) n += std::uint64_t(sizes[l]) * sizes[l + 1] + sizes[l + 1];
  return n;
}

// "784-512-512-10" for messages; the CNN's sizes are not a chain of layers, so say which is which.
std::string sizes_text(ModelKind kind, const std::vector<int>& sizes) {
  return kind == ModelKind::kCnn ? describe_cnn_sizes(sizes) : format_sizes(sizes);
}

// Why these CNN sizes are not a model this build can hold, or "" when they are: a 1×28×28 input,
// 10 classes, an odd kernel of at most kMaxCnnKernel (so that no layer's size overflows).
std::string cnn_sizes_problem(const std::vector<int>& s) {
  if (s[0] != 1 || s[1] != kImageRows || s[2] != kImageCols || s[7] != kClasses)
    return "CNN sizes " + describe_cnn_sizes(s) + " do not map 1x28x28 images to 10 classes";
  if (s[5] % 2 == 0 || s[5] > kMaxCnnKernel)
    return "CNN kernel " + std::to_string(s[5]) + " is impossible (odd, 1.." + std::to_string(kMaxCnnKernel) + ")";
  return "";
}

// Where the fields of a version-1 file lie, as far as its header describes them.
struct Layout {
  ModelKind kind = ModelKind::kMlp;
  std::vector<int> sizes;
  std::uint64_t params = 0;
  std::size_t arrays_at = 0;         // first parameter
  std::size_t config_length_at = 0;  // the u32 C; 0 while not reached
  std::size_t end = 0;               // the length the whole file should have
};

enum class Verdict { complete, truncated, invalid };

struct Parsed {
  Verdict verdict = Verdict::complete;
  std::string problem;  // for truncated and invalid
  Layout layout;
};

// Walks the version-1 header of `bytes` (magic already checked) without trusting any field:
// each count is checked against the bytes actually present before it is used. "truncated"
// means the header is consistent and the file ends before what it describes.
Parsed parse_layout(const std::vector<std::uint8_t>& bytes) {
  Parsed p;
  const std::size_t size = bytes.size();
  std::size_t at = sizeof kMagic;
  const auto truncated = [&](const std::string& inside, std::uint64_t needed) {
    p.verdict = Verdict::truncated;
    p.problem = "the file has " + std::to_string(size) + " bytes and ends inside the " + inside + " (which needs " +
                std::to_string(needed) + ")";
    return p;
  };
  const auto invalid = [&](const std::string& what) {
    p.verdict = Verdict::invalid;
    p.problem = what;
    return p;
  };

  if (size < at + 4) return truncated("format version", at + 4);
  const std::uint32_t version = le32(&bytes[at]);
  at += 4;
  if (version > kCheckpointVersion)
    return invalid("checkpoint format version " + std::to_string(version) + " is newer than this build reads (" +
                   std::to_string(kCheckpointVersion) + "); update mnist");
  if (version == 0) return invalid("checkpoint format version 0 does not exist");

  if (size < at + 4) return truncated("model kind", at + 4);
  const std::uint32_t kind = le32(&bytes[at]);
  at += 4;
  if (kind != std::uint32_t(ModelKind::kMlp) && kind != std::uint32_t(ModelKind::kCnn))
    return invalid("unknown model kind " + std::to_string(kind) + " (1 = MLP, 2 = CNN)");
  p.layout.kind = static_cast<ModelKind>(kind);
  const bool cnn = p.layout.kind == ModelKind::kCnn;

  if (size < at + 4) return truncated("layer count", at + 4);
  const std::uint32_t count = le32(&bytes[at]);
  at += 4;
  if (cnn && count != std::uint32_t(CnnShape::kSizes))
    return invalid("a CNN has " + std::to_string(CnnShape::kSizes) + " sizes, not " + std::to_string(count));
  if (count < 2 || count > kMaxSizes)
    return invalid(std::to_string(count) + " layer sizes is impossible (2.." + std::to_string(kMaxSizes) + ")");
  if (size < at + 4 * std::size_t{count}) return truncated("layer sizes", at + 4 * std::size_t{count});
  for (std::uint32_t i = 0; i < count; ++i, at += 4) {
    const std::uint32_t width = le32(&bytes[at]);
    if (width < 1 || width > kMaxWidth)
      return invalid("layer size " + std::to_string(width) + " is impossible (1.." + std::to_string(kMaxWidth) + ")");
    p.layout.sizes.push_back(static_cast<int>(width));
  }
  if (cnn) {
    const std::string problem = cnn_sizes_problem(p.layout.sizes);
    if (!problem.empty()) return invalid(problem);
  } else if (p.layout.sizes.front() != kPixels || p.layout.sizes.back() != kClasses) {
    return invalid("layer sizes " + format_sizes(p.layout.sizes) + " do not map 784 pixels to 10 classes");
  }

  if (size < at + 4) return truncated("dtype", at + 4);
  const std::uint32_t dtype = le32(&bytes[at]);
  at += 4;
  if (dtype != kDtypeF32) return invalid("unknown dtype " + std::to_string(dtype) + " (0 = f32)");

  if (size < at + 8) return truncated("parameter count", at + 8);
  p.layout.params = le64(&bytes[at]);
  at += 8;
  const std::uint64_t implied = implied_params(p.layout.kind, p.layout.sizes);
  if (p.layout.params != implied)
    return invalid("parameter count " + std::to_string(p.layout.params) + " does not match the layer sizes " +
                   sizes_text(p.layout.kind, p.layout.sizes) + " (which have " + std::to_string(implied) + ")");

  // Bounded by the file before anything is allocated: P is at most ~2.8e11 here for the MLP and
  // ~4.3e12 for the CNN, so 12·P fits.
  p.layout.arrays_at = at;
  const std::uint64_t arrays_end = at + 12 * p.layout.params;
  const std::uint64_t fixed_end = arrays_end + 8 + 4 + 8 + 4;  // step, epoch, best, C
  if (size < fixed_end)
    return truncated("parameters and Adam moments of the " + sizes_text(p.layout.kind, p.layout.sizes) + " model",
                     fixed_end);
  p.layout.config_length_at = static_cast<std::size_t>(fixed_end - 4);
  const std::uint32_t config_bytes = le32(&bytes[p.layout.config_length_at]);
  if (config_bytes > kMaxConfigBytes)
    return invalid("a configuration of " + std::to_string(config_bytes) + " bytes is impossible");
  p.layout.end = static_cast<std::size_t>(fixed_end) + config_bytes + kCrcBytes;
  if (size < p.layout.end) return truncated("configuration and checksum", p.layout.end);
  if (size > p.layout.end)
    return invalid(std::to_string(size - p.layout.end) + " unexpected bytes after the end of the checkpoint (" +
                   std::to_string(p.layout.end) + " bytes)");
  return p;
}

// A file whose checksum fails and which looks short may instead be whole with a damaged
// configuration-length field. Trying the length its actual size implies tells the two apart:
// a truncated file's last four bytes are almost never the CRC of such a file (p ≈ 2^-32).
bool config_length_damaged(const std::vector<std::uint8_t>& bytes, const Layout& layout) {
  const std::size_t at = layout.config_length_at;
  if (at == 0 || bytes.size() < at + 4 + kCrcBytes) return false;
  const std::uint32_t length = static_cast<std::uint32_t>(bytes.size() - at - 4 - kCrcBytes);
  const std::uint8_t field[4] = {std::uint8_t(length), std::uint8_t(length >> 8), std::uint8_t(length >> 16),
                                 std::uint8_t(length >> 24)};
  std::uint32_t crc = crc32_of(bytes.data(), at);
  crc = crc32_of(field, 4, crc);
  crc = crc32_of(bytes.data() + at + 4, length, crc);
  return crc == le32(&bytes[bytes.size() - kCrcBytes]);
}

std::vector<float> f32s_at(const std::vector<std::uint8_t>& bytes, std::size_t at, std::uint64_t count) {
  std::vector<float> out(count);
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint32_t bits = le32(&bytes[at + 4 * i]);
    std::memcpy(&out[i], &bits, sizeof bits);
  }
  return out;
}

void check_magic(const std::vector<std::uint8_t>& bytes, const std::string& path) {
  const std::size_t n = std::min(bytes.size(), sizeof kMagic);
  // std::equal, not memcmp: an empty vector's data() may be null, which memcmp must not get.
  const auto same = [](std::uint8_t byte, char c) { return byte == static_cast<std::uint8_t>(c); };
  if (!std::equal(bytes.begin(), bytes.begin() + n, kMagic, same))
    fail(path, "not an mnist checkpoint (it does not start with \"MNISTCKP\"); give the last.ckpt or best.ckpt "
               "of a run directory");
  if (n < sizeof kMagic)
    fail(path, "truncated: the file has " + std::to_string(bytes.size()) + " bytes, not even the 8-byte magic");
}

// The longest header parse_layout reads before the parameters: magic, version, kind, count,
// kMaxSizes sizes, dtype, parameter count.
constexpr std::size_t kMaxHeaderBytes = sizeof kMagic + 4 + 4 + 4 + 4 * kMaxSizes + 4 + 8;

// A file whose header is not a checkpoint's is still read whole up to this size, so that a bit
// flipped in the header of a real checkpoint is reported as the checksum mismatch it is.
constexpr std::uint64_t kMaxUnparsedBytes = std::uint64_t{1} << 30;

// The most bytes a file with this header may have (its configuration at most kMaxConfigBytes),
// or kMaxUnparsedBytes when the header is not one; 0 while the header is still incomplete.
std::uint64_t longest_checkpoint(const std::vector<std::uint8_t>& header) {
  const Parsed parsed = parse_layout(header);
  if (parsed.layout.arrays_at != 0)
    return parsed.layout.arrays_at + 12 * parsed.layout.params + 8 + 4 + 8 + 4 + kMaxConfigBytes + kCrcBytes;
  if (parsed.verdict == Verdict::invalid || header.size() >= kMaxHeaderBytes) return kMaxUnparsedBytes;
  return 0;
}

// The file's bytes. The magic is checked after the first chunk, so pointing at a large file of
// another kind costs 64 KiB, not the whole file; then the header, so that a file far longer than
// the model it describes (or than any checkpoint, when the header is not one) is refused without
// reading it into memory.
std::vector<std::uint8_t> read_checkpoint_file(const std::string& path) {
  std::uint64_t longest = 0;
  FileReading reading;
  reading.not_found = "checkpoint not found";
  reading.directory = "is a directory, not a checkpoint (give the last.ckpt or best.ckpt inside a run directory)";
  reading.after_chunk = [&](const std::vector<std::uint8_t>& bytes, std::int64_t file_size, bool first) {
    if (first) check_magic(bytes, path);
    if (longest == 0) longest = longest_checkpoint(bytes);
    const bool size_known = file_size >= 0;
    if (longest != 0 && (bytes.size() > longest || (size_known && std::uint64_t(file_size) > longest))) {
      const Parsed parsed = parse_layout(bytes);
      if (parsed.layout.arrays_at == 0) fail(path, parsed.problem + " (and the file has more than 1 GiB)");
      fail(path, (size_known ? std::to_string(file_size) : "more than " + std::to_string(longest)) +
                     " bytes, more than a checkpoint of the " + sizes_text(parsed.layout.kind, parsed.layout.sizes) +
                     " model can have (" + std::to_string(longest) + "): not a checkpoint, or damaged");
    }
    return true;
  };
  return read_file<CheckpointError>(path, reading);
}

}  // namespace

std::string serialize_checkpoint(const Checkpoint& c) {
  const ModelState& s = c.state;
  const bool cnn = s.kind == ModelKind::kCnn;
  const bool sizes_ok = cnn ? s.sizes.size() == std::size_t(CnnShape::kSizes) && cnn_sizes_problem(s.sizes).empty()
                            : s.sizes.size() >= 2;
  if (!sizes_ok || s.params.size() != implied_params(s.kind, s.sizes) || s.adam_m.size() != s.params.size() ||
      s.adam_v.size() != s.params.size() || c.epoch < 0)
    throw std::invalid_argument("serialize_checkpoint: the model state is inconsistent with its sizes");
  // A path that is not UTF-8 (a Latin-1 --data-dir) is stored with U+FFFD in its place: dump()
  // would otherwise throw, and the run would end without its checkpoint.
  const std::string config = c.config.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);

  const std::size_t size = sizeof kMagic + 4 + 4 + 4 + 4 * s.sizes.size() + 4 + 8 + 12 * s.params.size() + 8 + 4 + 8 +
                           4 + config.size() + kCrcBytes;
  Writer w(size);
  w.bytes(kMagic, sizeof kMagic);
  w.u32(kCheckpointVersion);
  w.u32(static_cast<std::uint32_t>(s.kind));
  w.u32(static_cast<std::uint32_t>(s.sizes.size()));
  for (int width : s.sizes) w.u32(static_cast<std::uint32_t>(width));
  w.u32(kDtypeF32);
  w.u64(s.params.size());
  w.f32s(s.params);
  w.f32s(s.adam_m);
  w.f32s(s.adam_v);
  w.u64(static_cast<std::uint64_t>(s.step));
  w.u32(static_cast<std::uint32_t>(c.epoch));
  w.f64(c.best_val_accuracy);
  w.u32(static_cast<std::uint32_t>(config.size()));
  w.bytes(config.data(), config.size());
  const std::string& text = w.text();
  w.u32(crc32_of(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  return std::move(w.text());
}

namespace {

// The file's bytes to `path` through write_file_atomically; its failure as a CheckpointError.
void write_checkpoint_bytes(const std::string& path, const std::string& bytes) {
  try {
    write_file_atomically(path, bytes);
  } catch (const IoError& error) {
    throw CheckpointError(error.what());
  }
}

}  // namespace

void write_checkpoint(const std::string& path, const Checkpoint& checkpoint) {
  write_checkpoint_bytes(path, serialize_checkpoint(checkpoint));
}

CheckpointWriter::~CheckpointWriter() {
  try {
    join();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "mnist: checkpoint error: %s\n", error.what());
  } catch (...) {
    std::fprintf(stderr, "mnist: checkpoint error: unknown\n");
  }
}

void CheckpointWriter::write(Checkpoint checkpoint, std::vector<std::string> paths) {
  join();
  thread_ = std::thread([this, checkpoint = std::move(checkpoint), paths = std::move(paths)]() mutable {
    try {
      const std::string bytes = serialize_checkpoint(checkpoint);
      for (const std::string& path : paths) write_checkpoint_bytes(path, bytes);
    } catch (...) {
      error_ = std::current_exception();
    }
    done_ = std::move(checkpoint);
  });
}

Checkpoint CheckpointWriter::recycle() {
  join();
  return std::exchange(done_, Checkpoint{});
}

void CheckpointWriter::warm_up(ModelKind kind, const std::vector<int>& sizes) {
  join();
  thread_ = std::thread([this, kind, sizes] {
    try {
      const std::size_t n = static_cast<std::size_t>(implied_params(kind, sizes));
      ModelState& state = done_.state;
      state.kind = kind;
      state.sizes = sizes;
      for (std::vector<float>* buffer : {&state.params, &state.adam_m, &state.adam_v}) buffer->assign(n, 0.f);
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

void CheckpointWriter::join() {
  if (thread_.joinable()) thread_.join();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

Checkpoint read_checkpoint(const std::string& path) { return decode_checkpoint(read_checkpoint_file(path), path); }

Checkpoint decode_checkpoint(const std::vector<std::uint8_t>& bytes, const std::string& path) {
  check_magic(bytes, path);

  // Integrity first: with the CRC intact, every check below reports what the writer actually
  // wrote (a newer version, a different model); without it, the only questions are whether the
  // file was cut short or damaged in place.
  const std::size_t size = bytes.size();
  const std::uint32_t stored = size >= sizeof kMagic + kCrcBytes ? le32(&bytes[size - kCrcBytes]) : 0;
  const std::uint32_t computed = size >= sizeof kMagic + kCrcBytes ? crc32_of(bytes.data(), size - kCrcBytes) : 0;
  const bool intact = size >= sizeof kMagic + kCrcBytes && stored == computed;
  const Parsed parsed = parse_layout(bytes);
  if (!intact) {
    if (parsed.verdict == Verdict::truncated && !config_length_damaged(bytes, parsed.layout))
      fail(path, "truncated: " + parsed.problem + "; the write or copy was interrupted");
    fail(path, "checksum mismatch (stored " + hex32(stored) + ", computed " + hex32(computed) +
                   "): the file is corrupted");
  }
  if (parsed.verdict != Verdict::complete) fail(path, parsed.problem);

  const Layout& layout = parsed.layout;
  Checkpoint c;
  c.state.kind = layout.kind;
  c.state.sizes = layout.sizes;
  std::size_t at = layout.arrays_at;
  c.state.params = f32s_at(bytes, at, layout.params);
  at += 4 * layout.params;
  c.state.adam_m = f32s_at(bytes, at, layout.params);
  at += 4 * layout.params;
  c.state.adam_v = f32s_at(bytes, at, layout.params);
  at += 4 * layout.params;
  c.state.step = static_cast<std::int64_t>(le64(&bytes[at]));
  at += 8;
  const std::uint32_t epoch = le32(&bytes[at]);
  at += 4;
  const std::uint64_t best_bits = le64(&bytes[at]);
  std::memcpy(&c.best_val_accuracy, &best_bits, sizeof best_bits);
  at += 8;
  if (c.state.step < 0) fail(path, "negative optimizer step " + std::to_string(c.state.step));
  if (epoch > static_cast<std::uint32_t>(std::numeric_limits<int>::max()))
    fail(path, "impossible epoch count " + std::to_string(epoch));
  c.epoch = static_cast<int>(epoch);
  if (!std::isnan(c.best_val_accuracy) && !(c.best_val_accuracy >= 0.0 && c.best_val_accuracy <= 1.0))
    fail(path, "best validation accuracy " + std::to_string(c.best_val_accuracy) + " is not in [0, 1]");

  const std::uint32_t config_bytes = le32(&bytes[at]);
  at += 4;
  const char* config = reinterpret_cast<const char*>(&bytes[at]);
  c.config = nlohmann::json::parse(config, config + config_bytes, nullptr, /*allow_exceptions=*/false);
  if (c.config.is_discarded() || !c.config.is_object()) fail(path, "the stored training configuration is not a JSON object");
  return c;
}

std::string trained_dataset(const Checkpoint& checkpoint) {
  const nlohmann::json& config = checkpoint.config;
  return config.contains("dataset") && config["dataset"] == "fashion" ? "fashion" : "mnist";
}

}  // namespace mnist
