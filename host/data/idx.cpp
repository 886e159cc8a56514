// IDX loading (include/mnist/data/idx.h). A file is read whole, inflated in memory when it is gzip
// data, and then checked field by field against its header before anything is copied out, so
// a caller either gets a complete, valid set or a DataError of the form "<path>: <what is
// wrong>" on one line.
#include "mnist/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <memory>
#include <system_error>

#include "mnist/core/files.h"
#include "mnist/core/printable.h"

namespace fs = std::filesystem;

namespace mnist {
namespace {

constexpr std::uint32_t kImagesMagic = 0x00000803;  // unsigned byte data, 3 dimensions
constexpr std::uint32_t kLabelsMagic = 0x00000801;  // unsigned byte data, 1 dimension
constexpr std::size_t kImagesHeaderBytes = 16;      // magic, count, rows, cols
constexpr std::size_t kLabelsHeaderBytes = 8;       // magic, count

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw DataError(printable(path) + ": " + what);
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

bool is_gzip(const std::vector<std::uint8_t>& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

// Whether bytes can begin an IDX file of unsigned bytes (magic 0x000008dd) or gzip data.
bool may_be_idx(const std::vector<std::uint8_t>& bytes) {
  return is_gzip(bytes) || (bytes.size() >= 3 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08);
}

// What read_idx_file does with a stream that does not begin like an IDX file.
enum class Foreign { kReadAll, kStopAfterFirstChunk };

// The file's bytes as they are on disk. No IDX file of 28x28 images is near kMaxInflatedBytes,
// compressed or not: past it the file is refused before it fills the memory (a 40 GB file,
// /dev/zero). A stream that begins like no IDX file (/dev/zero, a pipe of text) is not read on
// with kStopAfterFirstChunk: its first bytes are all the parser needs to say "wrong magic number".
std::vector<std::uint8_t> read_idx_file(const std::string& path, Foreign foreign) {
  const auto too_large = [&](const std::string& subject) {
    fail(path, subject + " more than an IDX file of 28x28 images can be here (" +
                   std::to_string(kMaxInflatedBytes >> 30) + " GiB, 1.3 million images): not a dataset file");
  };
  FileReading reading;
  reading.not_found = "file not found";
  reading.directory = "is a directory, not an IDX file";
  reading.before = [&](std::int64_t size) {
    if (size > std::int64_t(kMaxInflatedBytes)) too_large(std::to_string(size) + " bytes is");
  };
  reading.after_chunk = [&](const std::vector<std::uint8_t>& bytes, std::int64_t, bool first) {
    if (bytes.size() > kMaxInflatedBytes) too_large("it holds");
    return !(foreign == Foreign::kStopAfterFirstChunk && first && !may_be_idx(bytes));
  };
  return read_file<DataError>(path, reading);
}

// A file's contents as the parsers see them: `bytes` is the caller's buffer, or the inflated
// copy when that buffer is gzip data.
struct FileBytes {
  FileBytes(const std::vector<std::uint8_t>& contents, const std::string& path)
      : was_gzip(is_gzip(contents)),
        inflated(was_gzip ? gunzip(contents, path) : std::vector<std::uint8_t>()),
        bytes(was_gzip ? inflated : contents) {}
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;

  const bool was_gzip;
  const std::vector<std::uint8_t> inflated;
  const std::vector<std::uint8_t>& bytes;
};

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | std::uint32_t{p[3]};
}

// Checks the header magic and the overall length; returns the item count from the header.
std::uint32_t check_header(const std::string& path, const FileBytes& f, std::uint32_t magic,
                           std::size_t header_bytes, const char* kind, std::size_t bytes_per_item,
                           const char* item_word) {
  const std::size_t size = f.bytes.size();
  const char* how = f.was_gzip ? " after decompression" : "";
  if (size == 0) fail(path, std::string("file is empty (0 bytes") + how + ")");
  // The magic first: a file of the wrong kind says so even when it is also too short.
  if (size >= 4) {
    const std::uint32_t got = be32(f.bytes.data());
    if (got != magic) {
      std::string what = "wrong magic number " + hex32(got) + ", expected " + hex32(magic) + " (IDX " + kind + ")";
      const std::uint32_t other = magic == kImagesMagic ? kLabelsMagic : kImagesMagic;
      if (got == other) what += std::string("; this looks like an IDX ") + (magic == kImagesMagic ? "labels" : "images") + " file";
      fail(path, what);
    }
  }
  if (size < header_bytes) {
    fail(path, "too short for an IDX " + std::string(kind) + " header: " + std::to_string(size) + " bytes" + how +
                   ", need " + std::to_string(header_bytes));
  }
  const std::uint32_t count = be32(f.bytes.data() + 4);
  // 64-bit arithmetic: a hostile count must not wrap around and match a short file.
  const std::uint64_t want = header_bytes + std::uint64_t{count} * bytes_per_item;
  if (want != size) {
    fail(path, "header says " + std::to_string(count) + " " + item_word + " (" + std::to_string(want) +
                   " bytes) but file has " + std::to_string(size) + " bytes" + how);
  }
  return count;
}

// What to do about a missing dataset: the exact fetch command when the directory is one that
// data/fetch.sh fills.
std::string dataset_hint(const fs::path& dir) {
  std::string name = dir.filename().string();
  if (name.empty()) name = dir.parent_path().filename().string();  // "data/mnist/"
  if (name == "mnist" || name == "fashion") return "run data/fetch.sh " + name;
  return "run data/fetch.sh [mnist|fashion] (it fills data/mnist or data/fashion), or put the IDX files there";
}

}  // namespace

// Inflates a whole gzip file held in memory. zlib checks each member's CRC-32 and length, so
// bit rot shows up as Z_DATA_ERROR; running out of input before a member's end marker is a
// truncated download. Several concatenated members (what `cat a.gz b.gz` makes) are one
// stream, as for gzip -d; anything else after the last member is an error, not ignored.
std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& in, const std::string& path, std::size_t max_bytes) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail(path, "zlib inflateInit2 failed");
  // Ends the stream on every exit, including the throws below.
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, &inflateEnd);

  std::vector<std::uint8_t> out;
  // The gzip trailer holds the length mod 2^32: a good first guess for the buffer size. A
  // damaged trailer can say anything, so the guess is capped by deflate's best ratio (~1032:1)
  // and by 64 MiB (MNIST's largest file is 47 MB); the buffer doubles past that as needed, up to
  // max_bytes + 1.
  std::size_t guess = in.size() * 4;
  if (in.size() >= 18) {
    const std::uint8_t* t = in.data() + in.size() - 4;
    guess = std::size_t{t[0]} | std::size_t{t[1]} << 8 | std::size_t{t[2]} << 16 | std::size_t{t[3]} << 24;
  }
  guess = std::min({guess, in.size() * 1032, std::size_t{1} << 26, max_bytes});
  out.resize(std::min(std::max<std::size_t>(guess, 1 << 16), max_bytes + 1));

  zs.next_in = const_cast<Bytef*>(in.data());  // zlib's API is not const-correct
  std::size_t in_left = in.size();
  std::size_t produced = 0;
  for (;;) {
    if (produced == out.size()) out.resize(std::min(out.size() * 2, max_bytes + 1));
    // avail_in/avail_out are 32-bit: feed at most 1 GiB per call.
    const uInt in_now = static_cast<uInt>(std::min<std::size_t>(in_left, 1u << 30));
    const uInt out_now = static_cast<uInt>(std::min<std::size_t>(out.size() - produced, 1u << 30));
    zs.avail_in = in_now;
    zs.next_out = out.data() + produced;
    zs.avail_out = out_now;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    in_left -= in_now - zs.avail_in;
    produced += out_now - zs.avail_out;
    // The buffer never grows past max_bytes + 1: one byte over is enough to know.
    if (produced > max_bytes)
      fail(path, "gzip data inflates to more than " + std::to_string(max_bytes) +
                     " bytes, far beyond any MNIST-format file; it is not an IDX file");

    if (rc == Z_STREAM_END) {
      if (in_left == 0) break;
      const std::size_t at = in.size() - in_left;
      if (in_left >= 2 && in[at] == 0x1f && in[at + 1] == 0x8b) {  // another member follows
        inflateReset(&zs);
        continue;
      }
      fail(path, "corrupt gzip data: " + std::to_string(in_left) + " stray bytes after the compressed stream");
    }
    if (rc == Z_DATA_ERROR) {
      fail(path, std::string("corrupt gzip data (") + (zs.msg ? zs.msg : "invalid deflate stream") +
                     "); delete it and fetch it again");
    }
    if (rc == Z_MEM_ERROR) fail(path, "out of memory while inflating gzip data");
    // Z_BUF_ERROR (or Z_OK) with nothing left to read: the stream stops before its end.
    if (in_left == 0 && zs.avail_out != 0) {
      fail(path, "truncated gzip data (compressed stream ends early after " + std::to_string(produced) +
                     " bytes); delete it and fetch it again");
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) fail(path, "zlib inflate failed with code " + std::to_string(rc));
  }
  out.resize(produced);
  return out;
}

std::vector<std::uint8_t> read_maybe_gzip(const std::string& path) {
  std::vector<std::uint8_t> bytes = read_idx_file(path, Foreign::kReadAll);
  if (is_gzip(bytes)) return gunzip(bytes, path);
  return bytes;
}

ImageSet load_idx_images(const std::string& path) {
  return parse_idx_images(read_idx_file(path, Foreign::kStopAfterFirstChunk), path);
}

std::vector<std::uint8_t> load_idx_labels(const std::string& path) {
  return parse_idx_labels(read_idx_file(path, Foreign::kStopAfterFirstChunk), path);
}

ImageSet parse_idx_images(const std::vector<std::uint8_t>& contents, const std::string& path) {
  const FileBytes f(contents, path);
  // Dimensions are checked before the length so that a 27x28 file says so, instead of
  // tripping the length check with a misleading byte count.
  if (f.bytes.size() >= kImagesHeaderBytes && be32(f.bytes.data()) == kImagesMagic) {
    const std::uint32_t rows = be32(f.bytes.data() + 8);
    const std::uint32_t cols = be32(f.bytes.data() + 12);
    if (rows != kImageRows || cols != kImageCols) {
      fail(path, "images are " + std::to_string(rows) + "x" + std::to_string(cols) + ", expected " +
                     std::to_string(kImageRows) + "x" + std::to_string(kImageCols));
    }
  }
  const std::uint32_t count = check_header(path, f, kImagesMagic, kImagesHeaderBytes, "images", kPixels, "images");
  ImageSet set;
  set.count = count;
  set.pixels.assign(f.bytes.begin() + kImagesHeaderBytes, f.bytes.end());
  return set;
}

std::vector<std::uint8_t> parse_idx_labels(const std::vector<std::uint8_t>& contents, const std::string& path) {
  const FileBytes f(contents, path);
  check_header(path, f, kLabelsMagic, kLabelsHeaderBytes, "labels", 1, "labels");
  std::vector<std::uint8_t> labels(f.bytes.begin() + kLabelsHeaderBytes, f.bytes.end());
  const auto bad = std::find_if(labels.begin(), labels.end(), [](std::uint8_t l) { return l >= kClasses; });
  if (bad != labels.end()) {
    fail(path, "label " + std::to_string(*bad) + " at index " + std::to_string(bad - labels.begin()) +
                   " is out of range 0.." + std::to_string(kClasses - 1));
  }
  return labels;
}

LabeledImages load_labeled(const std::string& images_path, const std::string& labels_path) {
  ImageSet images = load_idx_images(images_path);
  std::vector<std::uint8_t> labels = load_idx_labels(labels_path);
  if (labels.size() != images.count) {
    throw DataError(printable(images_path) + ": has " + std::to_string(images.count) + " images but " +
                    printable(labels_path) + " has " + std::to_string(labels.size()) +
                    " labels; they must be a matching pair");
  }
  LabeledImages out;
  out.pixels = std::move(images.pixels);
  out.labels = std::move(labels);
  return out;
}

Dataset load_dataset(const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  const fs::file_status st = fs::status(root, ec);
  if (st.type() == fs::file_type::not_found) {
    throw DataError(printable(dir) +
                    ": dataset directory not found (it should hold train-images-idx3-ubyte(.gz) and 3 more files); " +
                    dataset_hint(root));
  }
  if (st.type() != fs::file_type::directory) {
    throw DataError(printable(dir) + ": not a directory (expected the dataset directory holding the IDX files)");
  }

  // Plain file first, then .gz: whichever is found is used; both are checked the same way.
  const char* names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                         "t10k-labels-idx1-ubyte"};
  std::string found[4];
  std::string missing;
  for (int i = 0; i < 4; ++i) {
    const fs::path plain = root / names[i];
    fs::path gz = plain;
    gz += ".gz";
    if (fs::exists(plain, ec)) {
      found[i] = plain.string();
    } else if (fs::exists(gz, ec)) {
      found[i] = gz.string();
    } else {
      missing += (missing.empty() ? "" : ", ") + printable(plain.string()) + "(.gz)";
    }
  }
  if (!missing.empty()) throw DataError(missing + " not found; " + dataset_hint(root));

  // Every file is loaded and checked before the Dataset is returned: no partial results.
  Dataset ds;
  ds.train = load_labeled(found[0], found[1]);
  ds.test = load_labeled(found[2], found[3]);
  // A valid IDX file may hold no images, but a dataset without training or test images can
  // only give a meaningless result (a test accuracy of 0/0, a batch larger than nothing).
  if (ds.train.count() == 0) fail(found[0], "holds no images: there is nothing to train on");
  if (ds.test.count() == 0) fail(found[2], "holds no images: there is nothing to test on");
  return ds;
}

std::string class_name(const std::string& dataset, int label) {
  static const char* const kFashion[] = {"T-shirt/top", "trouser", "pullover", "dress", "coat",
                                         "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
  if (dataset != "fashion" || label < 0 || label >= int(std::size(kFashion))) return "";
  return kFashion[label];
}

}  // namespace mnist
