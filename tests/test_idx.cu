// IDX loading: small files crafted here (raw and gzip) must round-trip exactly, and every kind
// of bad file must raise DataError naming the file and what is wrong. The last test loads the
// real MNIST from data/mnist (fetched by data/fetch.sh; tests run from the repository root).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mnist/data/idx.h"
#include "test_util.h"

namespace fs = std::filesystem;
using mnist::DataError;
using Bytes = std::vector<std::uint8_t>;

namespace {

constexpr std::uint32_t kImagesMagic = 0x00000803;
constexpr std::uint32_t kLabelsMagic = 0x00000801;

void put_be32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

// An IDX images file whose header says `count` images of rows×cols, followed by `pixels`
// (which the caller may make shorter or longer than the header claims).
Bytes idx_images(std::uint32_t count, const Bytes& pixels, std::uint32_t rows = 28, std::uint32_t cols = 28,
                 std::uint32_t magic = kImagesMagic) {
  Bytes out;
  put_be32(out, magic);
  put_be32(out, count);
  put_be32(out, rows);
  put_be32(out, cols);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

Bytes idx_labels(std::uint32_t count, const Bytes& labels, std::uint32_t magic = kLabelsMagic) {
  Bytes out;
  put_be32(out, magic);
  put_be32(out, count);
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

Bytes random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::uniform_int_distribution<int> dist(0, 255);
  Bytes out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(dist(rng));
  return out;
}

void write_raw(const fs::path& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

// mode: "wb" (default level) or "wb0" (stored blocks, no compression).
void write_gz(const fs::path& path, const Bytes& bytes, const char* mode = "wb") {
  gzFile gz = gzopen(path.c_str(), mode);
  ASSERT_NE(gz, nullptr) << "gzopen " << path;
  ASSERT_EQ(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
}

Bytes read_raw(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Runs `load`, which must throw DataError (not any other type) whose one-line message holds
// every phrase in `phrases` (the file name among them).
void expect_data_error(const std::function<void()>& load, const std::vector<std::string>& phrases) {
  try {
    load();
    ADD_FAILURE() << "expected mnist::DataError, but nothing was thrown";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
    for (const auto& p : phrases) EXPECT_NE(msg.find(p), std::string::npos) << "missing \"" << p << "\" in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected mnist::DataError, got another exception: " << e.what();
  }
}

// Each test gets a fresh directory under the system temp dir, removed afterwards.
class Idx : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() /
           ("mnist_test_idx_" + std::to_string(::getpid()) + "_" + std::to_string(rd()) + "_" + std::to_string(rd()));
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
    rng_.seed(mnist::test::fresh_seed());
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // n good images and labels with random content.
  Bytes pixels(std::size_t n) { return random_bytes(rng_, n * mnist::kPixels); }
  Bytes labels(std::size_t n) { return mnist::test::random_labels(rng_, n); }

  fs::path dir_;
  std::mt19937_64 rng_;
};

// --- good files -----------------------------------------------------------------------------

TEST_F(Idx, RawFilesRoundTrip) {
  const Bytes px = pixels(5), lb = labels(5);
  write_raw(path("img"), idx_images(5, px));
  write_raw(path("lbl"), idx_labels(5, lb));

  const mnist::ImageSet images = mnist::load_idx_images(path("img"));
  EXPECT_EQ(images.count, 5u);
  EXPECT_EQ(images.pixels, px);
  EXPECT_EQ(mnist::load_idx_labels(path("lbl")), lb);

  const mnist::LabeledImages both = mnist::load_labeled(path("img"), path("lbl"));
  EXPECT_EQ(both.count(), 5u);
  EXPECT_EQ(both.pixels, px);
  EXPECT_EQ(both.labels, lb);
}

TEST_F(Idx, GzipFilesRoundTrip) {
  const Bytes px = pixels(7), lb = labels(7);
  const Bytes img_file = idx_images(7, px);
  write_gz(path("img.gz"), img_file);
  write_gz(path("lbl.gz"), idx_labels(7, lb));

  EXPECT_EQ(mnist::read_maybe_gzip(path("img.gz")), img_file);
  const mnist::LabeledImages both = mnist::load_labeled(path("img.gz"), path("lbl.gz"));
  EXPECT_EQ(both.count(), 7u);
  EXPECT_EQ(both.pixels, px);
  EXPECT_EQ(both.labels, lb);
}

TEST_F(Idx, GzipIsDetectedByContentNotName) {
  const Bytes px = pixels(3);
  const Bytes img_file = idx_images(3, px);
  write_gz(path("compressed-but-plain-name"), img_file);
  write_raw(path("plain-but-named.gz"), img_file);
  EXPECT_EQ(mnist::load_idx_images(path("compressed-but-plain-name")).pixels, px);
  EXPECT_EQ(mnist::load_idx_images(path("plain-but-named.gz")).pixels, px);
}

TEST_F(Idx, ZeroImagesIsAValidFile) {
  write_raw(path("img"), idx_images(0, {}));
  const mnist::ImageSet images = mnist::load_idx_images(path("img"));
  EXPECT_EQ(images.count, 0u);
  EXPECT_TRUE(images.pixels.empty());
}

// --- files that are not there or cannot be read ---------------------------------------------

TEST_F(Idx, MissingFile) {
  expect_data_error([&] { mnist::load_idx_images(path("nope-images")); }, {"nope-images", "not found"});
  expect_data_error([&] { mnist::load_idx_labels(path("nope-labels")); }, {"nope-labels", "not found"});
}

TEST_F(Idx, DirectoryInsteadOfFile) {
  fs::create_directory(path("a-directory"));
  expect_data_error([&] { mnist::load_idx_images(path("a-directory")); }, {"a-directory", "is a directory"});
}

TEST_F(Idx, EmptyFile) {
  write_raw(path("empty"), {});
  expect_data_error([&] { mnist::load_idx_images(path("empty")); }, {"empty", "file is empty"});
  expect_data_error([&] { mnist::load_idx_labels(path("empty")); }, {"empty", "file is empty"});
}

TEST_F(Idx, ShorterThanHeader) {
  write_raw(path("stub"), {0, 0, 8, 3, 0, 0});
  expect_data_error([&] { mnist::load_idx_images(path("stub")); }, {"stub", "too short", "6 bytes"});
}

TEST_F(Idx, UnreadableFile) {
  if (::geteuid() == 0) {
    GTEST_SKIP() << "running as root, where chmod 000 does not stop reading, so this case cannot be made";
  }
  write_raw(path("locked"), idx_images(1, pixels(1)));
  fs::permissions(path("locked"), fs::perms::none);
  expect_data_error([&] { mnist::load_idx_images(path("locked")); }, {"locked", "cannot open", "Permission denied"});
}

// A file that opens but cannot be read, which root meets too: /proc/self/mem opens, and reading
// its offset 0 (never mapped) fails with EIO.
TEST_F(Idx, ReadErrorIsNamed) {
  if (!fs::exists("/proc/self/mem")) GTEST_SKIP() << "no /proc/self/mem (not Linux)";
  expect_data_error([&] { mnist::load_idx_images("/proc/self/mem"); },
                    {"/proc/self/mem", "read error", "Input/output error"});
}

// --- headers that do not fit the data -------------------------------------------------------

TEST_F(Idx, WrongMagic) {
  write_raw(path("labels-as-images"), idx_labels(2, labels(2)));
  expect_data_error([&] { mnist::load_idx_images(path("labels-as-images")); },
                    {"labels-as-images", "wrong magic number 0x00000801, expected 0x00000803"});
  write_raw(path("junk-magic"), idx_labels(2, labels(2), 0x12345678));
  expect_data_error([&] { mnist::load_idx_labels(path("junk-magic")); },
                    {"junk-magic", "wrong magic number 0x12345678, expected 0x00000801"});
}

TEST_F(Idx, WrongImageSize) {
  write_raw(path("img-27x28"), idx_images(2, random_bytes(rng_, 2 * 27 * 28), 27, 28));
  expect_data_error([&] { mnist::load_idx_images(path("img-27x28")); }, {"img-27x28", "27x28, expected 28x28"});
}

TEST_F(Idx, HeaderCountLargerThanData) {
  write_raw(path("img-short"), idx_images(5, pixels(4)));
  expect_data_error([&] { mnist::load_idx_images(path("img-short")); },
                    {"img-short", "header says 5 images (3936 bytes) but file has 3152 bytes"});
  write_raw(path("lbl-short"), idx_labels(5, labels(4)));
  expect_data_error([&] { mnist::load_idx_labels(path("lbl-short")); },
                    {"lbl-short", "header says 5 labels (13 bytes) but file has 12 bytes"});
  // A count whose byte size would wrap around 32 bits must not pass for a small file.
  write_raw(path("img-huge"), idx_images(0xffffffffu, pixels(1)));
  expect_data_error([&] { mnist::load_idx_images(path("img-huge")); },
                    {"img-huge", "header says 4294967295 images (3367254359296 bytes) but file has 800 bytes"});
}

TEST_F(Idx, HeaderCountSmallerThanData) {
  Bytes px = pixels(3);
  px.push_back(0);  // one trailing byte is enough to be wrong
  write_raw(path("img-long"), idx_images(3, px));
  expect_data_error([&] { mnist::load_idx_images(path("img-long")); },
                    {"img-long", "header says 3 images (2368 bytes) but file has 2369 bytes"});
}

TEST_F(Idx, LengthErrorsInGzipSayDecompressed) {
  write_gz(path("img-short.gz"), idx_images(5, pixels(4)));
  expect_data_error([&] { mnist::load_idx_images(path("img-short.gz")); },
                    {"img-short.gz", "header says 5 images", "after decompression"});
}

TEST_F(Idx, ImageAndLabelCountsDiffer) {
  write_raw(path("img5"), idx_images(5, pixels(5)));
  write_raw(path("lbl4"), idx_labels(4, labels(4)));
  expect_data_error([&] { mnist::load_labeled(path("img5"), path("lbl4")); },
                    {"img5", "lbl4", "5 images", "4 labels"});
}

TEST_F(Idx, LabelOutOfRange) {
  Bytes lb = labels(6);
  lb[3] = 10;
  lb[5] = 200;  // only the first bad one is named
  write_raw(path("lbl-bad"), idx_labels(6, lb));
  expect_data_error([&] { mnist::load_idx_labels(path("lbl-bad")); }, {"lbl-bad", "label 10 at index 3", "0..9"});
}

// --- damaged gzip -----------------------------------------------------------------------------

TEST_F(Idx, TruncatedGzip) {
  write_gz(path("whole.gz"), idx_images(20, pixels(20)));
  Bytes gz = read_raw(path("whole.gz"));
  gz.resize(gz.size() / 2);
  write_raw(path("cut.gz"), gz);
  expect_data_error([&] { mnist::load_idx_images(path("cut.gz")); }, {"cut.gz", "truncated gzip data"});
  // Losing only the 8-byte trailer (CRC and length) is caught too.
  gz = read_raw(path("whole.gz"));
  gz.resize(gz.size() - 8);
  write_raw(path("no-trailer.gz"), gz);
  expect_data_error([&] { mnist::load_idx_images(path("no-trailer.gz")); }, {"no-trailer.gz", "truncated gzip data"});
}

TEST_F(Idx, CorruptGzipStoredBlocks) {
  // Stored (level 0) blocks copy the data verbatim, so flipped bytes decode fine and only the
  // CRC-32 in the trailer can catch them: this checks the loader does not skip that check.
  write_gz(path("stored.gz"), idx_images(4, pixels(4)), "wb0");
  Bytes gz = read_raw(path("stored.gz"));
  for (std::size_t i = gz.size() / 2; i < gz.size() / 2 + 4; ++i) gz[i] ^= 0xff;
  write_raw(path("stored.gz"), gz);
  expect_data_error([&] { mnist::load_idx_images(path("stored.gz")); }, {"stored.gz", "corrupt gzip data"});
}

TEST_F(Idx, CorruptGzipDeflateStream) {
  // Compressible content so the middle of the file is Huffman-coded deflate data. Damage there
  // may be seen as a bad code, a bad CRC, or a stream that runs past the end of the input,
  // depending on the zlib build; all must be a DataError about the gzip data.
  Bytes px(30 * mnist::kPixels);
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<std::uint8_t>((i % 28) * (i % 13));
  write_gz(path("deflate.gz"), idx_images(30, px));
  Bytes gz = read_raw(path("deflate.gz"));
  ASSERT_GT(gz.size(), 64u);
  for (std::size_t i = gz.size() / 2; i < gz.size() / 2 + 8; ++i) gz[i] ^= 0x5a;
  write_raw(path("deflate.gz"), gz);
  expect_data_error([&] { mnist::load_idx_images(path("deflate.gz")); }, {"deflate.gz", "gzip data"});
}

TEST_F(Idx, TrailingGarbageAfterGzip) {
  write_gz(path("tail.gz"), idx_labels(3, labels(3)));
  Bytes gz = read_raw(path("tail.gz"));
  gz.insert(gz.end(), {'j', 'u', 'n', 'k'});
  write_raw(path("tail.gz"), gz);
  expect_data_error([&] { mnist::load_idx_labels(path("tail.gz")); }, {"tail.gz", "corrupt gzip data", "4 stray bytes"});
}

// A cap drawn at random around the 64 KiB first buffer; data of exactly cap bytes inflates,
// one byte more is refused (random bytes barely compress, so the buffer must grow to get there).
TEST_F(Idx, GzipInflatesUpToTheCapAndNotOneByteMore) {
  const std::size_t cap = std::uniform_int_distribution<std::size_t>(50000, 300000)(rng_);
  const Bytes at_cap = random_bytes(rng_, cap);
  write_gz(path("at-cap.gz"), at_cap);
  EXPECT_EQ(mnist::gunzip(read_raw(path("at-cap.gz")), "at-cap.gz", cap), at_cap) << "cap " << cap;

  Bytes over = at_cap;
  over.push_back(0x5a);
  write_gz(path("over.gz"), over);
  expect_data_error([&] { mnist::gunzip(read_raw(path("over.gz")), "over.gz", cap); },
                    {"over.gz", "inflates to more than " + std::to_string(cap) + " bytes"});
}

// A "zip bomb" through the real loader and its default cap: a few MiB of gzip that inflate to
// kMaxInflatedBytes + 1 MiB of zeros. It must be refused once the cap is passed, not inflated
// into whatever memory it claims.
TEST_F(Idx, GzipBombIsRefusedByTheLoader) {
  gzFile gz = gzopen(path("bomb.gz").c_str(), "wb1");  // fastest; zeros compress ~1000:1 anyway
  ASSERT_NE(gz, nullptr);
  const Bytes zeros(std::size_t{1} << 20, 0);
  const Bytes header = idx_images(100000000, {});  // claims 100 million images
  ASSERT_EQ(gzwrite(gz, header.data(), static_cast<unsigned>(header.size())), static_cast<int>(header.size()));
  for (std::size_t written = 0; written <= mnist::kMaxInflatedBytes; written += zeros.size())
    ASSERT_EQ(gzwrite(gz, zeros.data(), static_cast<unsigned>(zeros.size())), static_cast<int>(zeros.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
  ASSERT_LT(fs::file_size(path("bomb.gz")), std::uintmax_t{8} << 20);  // ~4.5 MiB at level 1
  expect_data_error([&] { mnist::load_idx_images(path("bomb.gz")); },
                    {"bomb.gz", "inflates to more than " + std::to_string(mnist::kMaxInflatedBytes) + " bytes"});
}

// A raw file past the same cap (a wrong file of many GB, here sparse: no disk, no memory) is
// refused from its size, before it is read into memory, naming the file.
TEST_F(Idx, AFileLargerThanAnyDatasetIsRefusedBeforeItIsRead) {
  const std::uintmax_t size = mnist::kMaxInflatedBytes + 1 + rng_() % (std::uintmax_t{1} << 32);
  write_raw(path("huge"), idx_images(1, pixels(1)));
  fs::resize_file(path("huge"), size);
  expect_data_error([&] { mnist::load_idx_images(path("huge")); },
                    {"huge", std::to_string(size) + " bytes is more than an IDX file", "not a dataset file"});
}

// A stream is read to its end, not trusted by its size; but one that begins like no IDX file is
// refused after its first bytes. /dev/zero used to be read to the 1 GiB cap (2 GB of memory).
TEST_F(Idx, AStreamThatBeginsLikeNoIdxFileIsRefusedAtOnce) {
  if (!fs::exists("/dev/zero")) GTEST_SKIP() << "no /dev/zero";
  expect_data_error([&] { mnist::load_idx_images("/dev/zero"); }, {"/dev/zero", "wrong magic number 0x00000000"});
  expect_data_error([&] { mnist::load_idx_labels("/dev/zero"); }, {"/dev/zero", "wrong magic number 0x00000000"});
}

// --- whole dataset directories ----------------------------------------------------------------

TEST_F(Idx, DatasetLoadsFromMixedRawAndGzip) {
  const Bytes train_px = pixels(6), train_lb = labels(6), test_px = pixels(2), test_lb = labels(2);
  write_gz(path("train-images-idx3-ubyte.gz"), idx_images(6, train_px));
  write_raw(path("train-labels-idx1-ubyte"), idx_labels(6, train_lb));
  write_raw(path("t10k-images-idx3-ubyte"), idx_images(2, test_px));
  write_gz(path("t10k-labels-idx1-ubyte.gz"), idx_labels(2, test_lb));

  const mnist::Dataset ds = mnist::load_dataset(dir_.string());
  EXPECT_EQ(ds.train.pixels, train_px);
  EXPECT_EQ(ds.train.labels, train_lb);
  EXPECT_EQ(ds.test.pixels, test_px);
  EXPECT_EQ(ds.test.labels, test_lb);
}

TEST_F(Idx, DatasetWithSomeFilesMissing) {
  write_gz(path("train-images-idx3-ubyte.gz"), idx_images(2, pixels(2)));
  write_gz(path("train-labels-idx1-ubyte.gz"), idx_labels(2, labels(2)));
  expect_data_error([&] { mnist::load_dataset(dir_.string()); },
                    {"t10k-images-idx3-ubyte(.gz)", "t10k-labels-idx1-ubyte(.gz)", "not found", "data/fetch.sh"});
}

TEST_F(Idx, DatasetDirectoryMissing) {
  const fs::path mnist_dir = dir_ / "mnist";  // named like the real one, so the hint is exact
  expect_data_error([&] { mnist::load_dataset(mnist_dir.string()); },
                    {mnist_dir.string(), "not found", "run data/fetch.sh mnist"});
  fs::create_directory(mnist_dir);
  expect_data_error([&] { mnist::load_dataset(mnist_dir.string()); },
                    {(mnist_dir / "train-images-idx3-ubyte(.gz)").string(), "not found", "run data/fetch.sh mnist"});
}

// Files of no images are valid IDX files (ZeroImagesIsAValidFile), not a dataset: `evaluate`
// printed a test accuracy of 0.0000 (0/0) and exit 0.
TEST_F(Idx, DatasetWithNoTrainingOrNoTestImagesIsRefused) {
  const std::uint32_t n = 1 + rng_() % 5;
  write_raw(path("train-images-idx3-ubyte"), idx_images(n, pixels(n)));
  write_raw(path("train-labels-idx1-ubyte"), idx_labels(n, labels(n)));
  write_raw(path("t10k-images-idx3-ubyte"), idx_images(0, {}));
  write_raw(path("t10k-labels-idx1-ubyte"), idx_labels(0, {}));
  expect_data_error([&] { mnist::load_dataset(dir_.string()); },
                    {"t10k-images-idx3-ubyte", "holds no images: there is nothing to test on"});
  write_raw(path("t10k-images-idx3-ubyte"), idx_images(n, pixels(n)));
  write_raw(path("t10k-labels-idx1-ubyte"), idx_labels(n, labels(n)));
  write_raw(path("train-images-idx3-ubyte"), idx_images(0, {}));
  write_raw(path("train-labels-idx1-ubyte"), idx_labels(0, {}));
  expect_data_error([&] { mnist::load_dataset(dir_.string()); },
                    {"train-images-idx3-ubyte", "holds no images: there is nothing to train on"});
}

TEST_F(Idx, DatasetWithABadFileFailsWhole) {
  write_raw(path("train-images-idx3-ubyte"), idx_images(2, pixels(2)));
  write_raw(path("train-labels-idx1-ubyte"), idx_labels(2, labels(2)));
  write_raw(path("t10k-images-idx3-ubyte"), idx_images(1, pixels(1)));
  write_raw(path("t10k-labels-idx1-ubyte"), idx_labels(1, {10}));
  expect_data_error([&] { mnist::load_dataset(dir_.string()); }, {"t10k-labels-idx1-ubyte", "label 10 at index 0"});
}

// --- the real data --------------------------------------------------------------------------

TEST(IdxRealData, MnistLoadsWithKnownCountsAndFirstLabels) {
  if (!fs::is_directory("data/mnist")) {
    FAIL() << "data/mnist not found (working directory " << fs::current_path()
           << "); run data/fetch.sh mnist from the repository root first";
  }
  const mnist::Dataset ds = mnist::load_dataset("data/mnist");
  ASSERT_EQ(ds.train.count(), 60000u);
  ASSERT_EQ(ds.test.count(), 10000u);
  EXPECT_EQ(ds.train.pixels.size(), 60000u * mnist::kPixels);
  EXPECT_EQ(ds.test.pixels.size(), 10000u * mnist::kPixels);
  EXPECT_EQ(ds.train.labels[0], 5);
  EXPECT_EQ(ds.test.labels[0], 7);
}

}  // namespace
