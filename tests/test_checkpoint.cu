// Checkpoints (include/mnist/io/checkpoint.h): the exact round trip, the documented byte layout,
// one clear error for every kind of damage, the atomic write, resume reaching the same result
// as an uninterrupted run, and `mnist train --resume` / `mnist evaluate` end to end.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cli_util.h"
#include "mnist/io/checkpoint.h"
#include "mnist/core/config.h"
#include "mnist/model/mlp.h"
#include "mnist/model/model.h"
#include "mnist/train/run_dir.h"
#include "mnist/train/trainer.h"
#include "test_util.h"

namespace mnist {
namespace {

namespace fs = std::filesystem;
using test::fresh_temp_dir;
using test::line_count;
using test::Outcome;
using test::read_text;
using test::run_mnist;
using test::run_program;
using test::write_text;

using Bytes = std::vector<std::uint8_t>;

Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// A checkpoint with random contents (weights, moments, step, epoch, best) for the model of
// `config` (kind and sizes from model.h).
Checkpoint random_checkpoint_of(std::mt19937_64& rng, TrainConfig config) {
  config.seed = rng();
  Checkpoint c;
  c.state.kind = model_kind(config);
  c.state.sizes = model_sizes(config);
  const std::size_t n = c.state.kind == ModelKind::kCnn ? cnn_shape(config).param_count()
                                                        : mlp_shape(config).param_count();
  c.state.params = test::random_floats(rng, n, -1.f, 1.f);
  c.state.adam_m = test::random_floats(rng, n, -1e-3f, 1e-3f);
  c.state.adam_v = test::random_floats(rng, n, 0.f, 1e-6f);
  c.state.step = std::int64_t(rng() % 100000);
  c.epoch = int(rng() % 50);
  c.best_val_accuracy = double(rng() % 10001) / 10000.0;
  c.config = to_json(config);
  return c;
}

// ... for a small MLP 784-hidden-10.
Checkpoint random_checkpoint(std::mt19937_64& rng, const std::vector<int>& hidden) {
  TrainConfig config;
  config.hidden = hidden;
  return random_checkpoint_of(rng, config);
}

// ... for a small CNN of random shape: filters 1..4, kernel 1, 3 or 5, dense width 1..8.
Checkpoint random_cnn_checkpoint(std::mt19937_64& rng) {
  TrainConfig config;
  config.model = "cnn";
  config.channels = {int(1 + rng() % 4), int(1 + rng() % 4)};
  config.kernel = int(1 + 2 * (rng() % 3));
  config.hidden = {int(1 + rng() % 8)};
  return random_checkpoint_of(rng, config);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// An atomic write leaves no temporary file behind, whatever it wrote.
void expect_no_temporary_files(const fs::path& dir) {
  for (const fs::directory_entry& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << "left behind: " << entry.path();
}

void expect_same(const Checkpoint& got, const Checkpoint& want) {
  EXPECT_EQ(got.state.kind, want.state.kind);
  EXPECT_EQ(got.state.sizes, want.state.sizes);
  EXPECT_TRUE(same_bits(got.state.params, want.state.params));
  EXPECT_TRUE(same_bits(got.state.adam_m, want.state.adam_m));
  EXPECT_TRUE(same_bits(got.state.adam_v, want.state.adam_v));
  EXPECT_EQ(got.state.step, want.state.step);
  EXPECT_EQ(got.epoch, want.epoch);
  if (std::isnan(want.best_val_accuracy))
    EXPECT_TRUE(std::isnan(got.best_val_accuracy));
  else
    EXPECT_EQ(got.best_val_accuracy, want.best_val_accuracy);
  EXPECT_EQ(got.config, want.config);
}

std::string error_of(const Bytes& bytes, const std::string& name = "test.ckpt") {
  try {
    decode_checkpoint(bytes, name);
  } catch (const CheckpointError& error) {
    return error.what();
  }
  return "";
}

std::string error_of_file(const std::string& path) {
  try {
    read_checkpoint(path);
  } catch (const CheckpointError& error) {
    return error.what();
  }
  return "";
}

void put32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = std::uint8_t(v >> (8 * i));
}
void put64(Bytes& b, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = std::uint8_t(v >> (8 * i));
}
std::uint32_t get32(const Bytes& b, std::size_t at) {
  return b[at] | std::uint32_t(b[at + 1]) << 8 | std::uint32_t(b[at + 2]) << 16 | std::uint32_t(b[at + 3]) << 24;
}
// Recomputes the trailing CRC, as a writer of that (crafted) content would have.
void reseal(Bytes& b) { put32(b, b.size() - 4, std::uint32_t(crc32(0L, b.data(), uInt(b.size() - 4)))); }

// One 32-bit header field set to a value the reader must refuse by name.
struct HeaderPatch {
  std::size_t at;
  std::uint32_t value;
  const char* must_mention;
};

// The reader's error for `good` with the patch applied and the checksum made to match again,
// so that the refusal is the header's and not the checksum's.
std::string error_of_patched(const Bytes& good, const HeaderPatch& patch) {
  Bytes b = good;
  put32(b, patch.at, patch.value);
  reseal(b);
  return error_of(b);
}

// --- the file itself ------------------------------------------------------------------------

TEST(Checkpoint, RoundTripIsBitExact) {
  std::mt19937_64 rng(test::fresh_seed());
  Checkpoint c = random_checkpoint(rng, {7, 5});
  // Values a text format would lose: signed zero, subnormals, infinities, NaN payloads.
  c.state.params[0] = -0.f;
  c.state.params[1] = std::numeric_limits<float>::denorm_min();
  c.state.params[2] = std::numeric_limits<float>::infinity();
  c.state.adam_m[3] = std::numeric_limits<float>::quiet_NaN();
  const fs::path dir = fresh_temp_dir("ckpt-roundtrip");
  write_checkpoint((dir / "a.ckpt").string(), c);
  expect_same(read_checkpoint((dir / "a.ckpt").string()), c);

  c.best_val_accuracy = std::nan("");  // a run without a validation split
  write_checkpoint((dir / "a.ckpt").string(), c);
  expect_same(read_checkpoint((dir / "a.ckpt").string()), c);
  expect_no_temporary_files(dir);
  fs::remove_all(dir);
}

TEST(Checkpoint, BytesFollowTheDocumentedLayout) {
  std::mt19937_64 rng(test::fresh_seed());
  const Checkpoint c = random_checkpoint(rng, {3});
  const Bytes b = to_bytes(serialize_checkpoint(c));
  const std::size_t p = c.state.params.size();
  ASSERT_EQ(p, 784u * 3 + 3 + 3 * 10 + 10);
  EXPECT_EQ(std::string(b.begin(), b.begin() + 8), "MNISTCKP");
  EXPECT_EQ(get32(b, 8), 1u);   // version
  EXPECT_EQ(get32(b, 12), 1u);  // kind: MLP
  EXPECT_EQ(get32(b, 16), 3u);  // three sizes
  EXPECT_EQ(get32(b, 20), 784u);
  EXPECT_EQ(get32(b, 24), 3u);
  EXPECT_EQ(get32(b, 28), 10u);
  EXPECT_EQ(get32(b, 32), 0u);  // dtype f32
  EXPECT_EQ(get32(b, 36) | std::uint64_t(get32(b, 40)) << 32, p);
  std::size_t at = 44;
  for (const std::vector<float>* array : {&c.state.params, &c.state.adam_m, &c.state.adam_v})
    for (std::size_t i = 0; i < p; ++i, at += 4) {
      std::uint32_t bits;
      std::memcpy(&bits, &(*array)[i], 4);
      ASSERT_EQ(get32(b, at), bits) << "element " << i;
    }
  EXPECT_EQ(get32(b, at) | std::uint64_t(get32(b, at + 4)) << 32, std::uint64_t(c.state.step));
  EXPECT_EQ(get32(b, at + 8), std::uint32_t(c.epoch));
  double best;
  const std::uint64_t best_bits = get32(b, at + 12) | std::uint64_t(get32(b, at + 16)) << 32;
  std::memcpy(&best, &best_bits, 8);
  EXPECT_EQ(best, c.best_val_accuracy);
  const std::uint32_t config_bytes = get32(b, at + 20);
  EXPECT_EQ(nlohmann::json::parse(std::string(b.begin() + at + 24, b.begin() + at + 24 + config_bytes)), c.config);
  ASSERT_EQ(b.size(), at + 24 + config_bytes + 4);
  EXPECT_EQ(get32(b, b.size() - 4), std::uint32_t(crc32(0L, b.data(), uInt(b.size() - 4))));
}

// The format written one byte at a time, the plainest way it can be: serialize_checkpoint,
// which copies whole arrays, must produce exactly these bytes, so files written before and
// after it load alike.
std::string reference_encoding(const Checkpoint& c) {
  std::string out;
  const auto byte = [&](std::uint8_t b) { out.push_back(static_cast<char>(b)); };
  const auto u32 = [&](std::uint32_t v) {
    for (int i = 0; i < 4; ++i) byte(std::uint8_t(v >> (8 * i)));
  };
  const auto u64 = [&](std::uint64_t v) {
    for (int i = 0; i < 8; ++i) byte(std::uint8_t(v >> (8 * i)));
  };
  out = "MNISTCKP";
  u32(1);
  u32(std::uint32_t(c.state.kind));
  u32(std::uint32_t(c.state.sizes.size()));
  for (int width : c.state.sizes) u32(std::uint32_t(width));
  u32(0);
  u64(c.state.params.size());
  for (const std::vector<float>* array : {&c.state.params, &c.state.adam_m, &c.state.adam_v})
    for (float x : *array) {
      std::uint32_t bits;
      std::memcpy(&bits, &x, 4);
      u32(bits);
    }
  u64(std::uint64_t(c.state.step));
  u32(std::uint32_t(c.epoch));
  std::uint64_t best;
  std::memcpy(&best, &c.best_val_accuracy, 8);
  u64(best);
  const std::string config = c.config.dump();
  u32(std::uint32_t(config.size()));
  out += config;
  u32(std::uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(out.data()), uInt(out.size()))));
  return out;
}

TEST(Checkpoint, SerializerWritesTheReferenceBytes) {
  std::mt19937_64 rng(test::fresh_seed());
  std::vector<Checkpoint> checkpoints = {random_checkpoint(rng, {int(1 + rng() % 64), int(1 + rng() % 64)}),
                                         random_checkpoint(rng, {}), random_cnn_checkpoint(rng)};
  checkpoints[1].best_val_accuracy = std::nan("");
  checkpoints[1].state.params[0] = -0.f;
  checkpoints[1].state.adam_m[1] = std::numeric_limits<float>::quiet_NaN();
  for (const Checkpoint& c : checkpoints) {
    const std::string bytes = serialize_checkpoint(c);
    const std::string want = reference_encoding(c);
    ASSERT_EQ(bytes.size(), want.size()) << format_sizes(c.state.sizes);
    EXPECT_TRUE(bytes == want) << format_sizes(c.state.sizes) << ": first difference at byte "
                               << std::distance(bytes.begin(),
                                                std::mismatch(bytes.begin(), bytes.end(), want.begin()).first);
  }
}

// The CNN (kind 2): eight sizes in the order of model.h, then the same arrays and trailer.
TEST(Checkpoint, CnnRoundTripsWithItsKindAndSizes) {
  std::mt19937_64 rng(test::fresh_seed());
  const Checkpoint c = random_cnn_checkpoint(rng);
  const Bytes b = to_bytes(serialize_checkpoint(c));
  const std::vector<int>& s = c.state.sizes;
  EXPECT_EQ(get32(b, 12), 2u);  // kind: CNN
  ASSERT_EQ(get32(b, 16), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(get32(b, 20 + 4 * i), std::uint32_t(s[i])) << "size " << i;
  EXPECT_EQ(std::vector<int>({s[0], s[1], s[2], s[7]}), std::vector<int>({1, 28, 28, 10}));
  // conv1 (1→c1, k×k), conv2 (c1→c2), dense (c2·7·7→h), dense (h→10), each with its bias.
  const std::uint64_t c1 = s[3], c2 = s[4], k = s[5], h = s[6];
  const std::uint64_t p = c1 * k * k + c1 + c2 * c1 * k * k + c2 + c2 * 49 * h + h + h * 10 + 10;
  EXPECT_EQ(get32(b, 56) | std::uint64_t(get32(b, 60)) << 32, p);
  EXPECT_EQ(b.size(), 64 + 12 * p + 24 + c.config.dump().size() + 4);
  expect_same(decode_checkpoint(b, "cnn.ckpt"), c);
}

TEST(Checkpoint, ImpossibleCnnHeadersAreNamed) {
  std::mt19937_64 rng(test::fresh_seed());
  const Bytes good = to_bytes(serialize_checkpoint(random_cnn_checkpoint(rng)));
  // Sizes at 20 (in_channels), 24, 28 (height, width), 32, 36 (filters), 40 (kernel), 44 (dense), 48 (classes).
  for (const HeaderPatch& patch :
       {HeaderPatch{16, 7, "a CNN has 8 sizes, not 7"}, HeaderPatch{20, 3, "do not map 1x28x28 images to 10 classes"},
        HeaderPatch{24, 27, "do not map 1x28x28"}, HeaderPatch{48, 9, "to 10 classes"},
        HeaderPatch{40, 4, "CNN kernel 4 is impossible"}, HeaderPatch{40, 33, "CNN kernel 33 is impossible"},
        HeaderPatch{36, 0, "layer size 0 is impossible"}, HeaderPatch{44, 70000, "layer size 70000"},
        HeaderPatch{56, 12345, "does not match the layer sizes input 1x28x28"}}) {
    const std::string e = error_of_patched(good, patch);
    EXPECT_NE(e.find(patch.must_mention), std::string::npos) << e;
  }
  // The largest CNN the header allows (65536 filters, kernel 31, dense 65536): ~4.3e12
  // parameters claimed by a small file, refused by the size bound before anything is allocated.
  Bytes huge = good;
  for (const auto& [at, value] : {std::pair{32, 65536}, {36, 65536}, {40, 31}, {44, 65536}}) put32(huge, at, value);
  const std::uint64_t c1 = 65536, c2 = 65536, k = 31, h = 65536;
  put64(huge, 56, c1 * k * k + c1 + c2 * c1 * k * k + c2 + c2 * 49 * h + h + h * 10 + 10);
  reseal(huge);
  const std::string e = error_of(huge);
  EXPECT_NE(e.find("needs"), std::string::npos) << e;
  EXPECT_NE(e.find("conv 31x31 65536-65536"), std::string::npos) << e;
}

TEST(Checkpoint, MissingFileOrDirectoryIsNamed) {
  const fs::path dir = fresh_temp_dir("ckpt-missing");
  const std::string missing = error_of_file((dir / "nope.ckpt").string());
  EXPECT_NE(missing.find((dir / "nope.ckpt").string()), std::string::npos) << missing;
  EXPECT_NE(missing.find("not found"), std::string::npos) << missing;
  const std::string directory = error_of_file(dir.string());
  EXPECT_NE(directory.find("is a directory"), std::string::npos) << directory;
  fs::remove_all(dir);
}

TEST(Checkpoint, OtherFilesAreNotCheckpoints) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("ckpt-other");
  Bytes noise(5000);
  for (auto& x : noise) x = std::uint8_t(rng());
  noise[0] = 'X';  // never the magic by chance
  write_text(dir / "noise.bin", std::string(noise.begin(), noise.end()));
  write_text(dir / "notes.txt", "epoch 1: loss 0.3\nthis is not a checkpoint\n");
  write_text(dir / "report.json", "{\"test\": {\"accuracy\": 0.98}}\n");
  for (const char* name : {"noise.bin", "notes.txt", "report.json"}) {
    const std::string error = error_of_file((dir / name).string());
    EXPECT_NE(error.find((dir / name).string()), std::string::npos) << error;
    EXPECT_NE(error.find("not an mnist checkpoint"), std::string::npos) << error;
  }
  fs::remove_all(dir);
}

// A file far longer than the model its header describes (a checkpoint with gigabytes after it,
// sparse here), or a header that is not one on a file of more than 1 GiB, is refused from the
// header and the file's size, before the file is read into memory.
TEST(Checkpoint, AFileFarLongerThanItsModelIsRefusedBeforeItIsRead) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("ckpt-long");
  const std::string good = serialize_checkpoint(random_checkpoint(rng, {3}));
  const std::uintmax_t long_size = good.size() + (std::uintmax_t{2} << 20) + rng() % (std::uintmax_t{1} << 34);
  write_text(dir / "long.ckpt", good);
  fs::resize_file(dir / "long.ckpt", long_size);
  const std::string long_error = error_of_file((dir / "long.ckpt").string());
  EXPECT_NE(long_error.find(std::to_string(long_size) + " bytes, more than a checkpoint of the 784-3-10 model"),
            std::string::npos)
      << long_error;

  write_text(dir / "zeros.ckpt", "MNISTCKP");  // then zeros: format version 0
  const std::uintmax_t zeros_size = (std::uintmax_t{1} << 30) + 1 + rng() % (std::uintmax_t{1} << 34);
  fs::resize_file(dir / "zeros.ckpt", zeros_size);
  const std::string zeros_error = error_of_file((dir / "zeros.ckpt").string());
  EXPECT_NE(zeros_error.find("version 0 does not exist (and the file has more than 1 GiB)"), std::string::npos)
      << zeros_error;
  fs::remove_all(dir);
}

TEST(Checkpoint, NewerVersionOtherKindsAndDtypesAreNamedWhenTheFileIsIntact) {
  std::mt19937_64 rng(test::fresh_seed());
  const Bytes good = to_bytes(serialize_checkpoint(random_checkpoint(rng, {4})));
  for (const HeaderPatch& patch :
       {HeaderPatch{8, 2, "format version 2 is newer"}, HeaderPatch{8, 0, "version 0"},
        HeaderPatch{12, 2, "a CNN has 8 sizes, not 3"}, HeaderPatch{12, 9, "unknown model kind 9"},
        HeaderPatch{32, 1, "unknown dtype 1"}}) {
    const std::string error = error_of_patched(good, patch);
    EXPECT_NE(error.find(patch.must_mention), std::string::npos) << error;
    EXPECT_EQ(error.find("checksum"), std::string::npos) << error;
  }
}

TEST(Checkpoint, EveryTruncationIsReportedAsTruncated) {
  std::mt19937_64 rng(test::fresh_seed());
  const Bytes good = to_bytes(serialize_checkpoint(random_checkpoint(rng, {1})));
  for (std::size_t length = 0; length < good.size(); ++length) {
    const std::string error = error_of(Bytes(good.begin(), good.begin() + length));
    ASSERT_EQ(error.rfind("test.ckpt: truncated", 0), 0u) << "cut at " << length << ": " << error;
  }
  // The same through a file, at a few places.
  const fs::path dir = fresh_temp_dir("ckpt-truncated");
  for (std::size_t length : {std::size_t(0), std::size_t(5), std::size_t(30), good.size() / 2, good.size() - 1}) {
    write_text(dir / "cut.ckpt", std::string(good.begin(), good.begin() + length));
    const std::string error = error_of_file((dir / "cut.ckpt").string());
    EXPECT_NE(error.find("truncated"), std::string::npos) << error;
  }
  fs::remove_all(dir);
}

// Found by tests/fuzz/fuzz_checkpoint: the magic check passed an empty vector's null data() to
// memcmp, undefined behaviour even for zero bytes (UBSan: nonnull-attribute).
TEST(Checkpoint, NoBytesAtAllIsTruncated) {
  EXPECT_EQ(error_of(Bytes{}), "test.ckpt: truncated: the file has 0 bytes, not even the 8-byte magic");
}

TEST(Checkpoint, EveryFlippedBitIsAChecksumMismatch) {
  std::mt19937_64 rng(test::fresh_seed());
  const Bytes good = to_bytes(serialize_checkpoint(random_checkpoint(rng, {1})));
  Bytes b = good;
  for (std::size_t bit = 0; bit < 8 * good.size(); ++bit) {
    b[bit / 8] ^= std::uint8_t(1u << (bit % 8));
    const std::string error = error_of(b);
    // A changed magic no longer claims to be a checkpoint at all; anywhere else the CRC catches it.
    const char* expected = bit < 64 ? "not an mnist checkpoint" : "checksum mismatch";
    ASSERT_NE(error.find(expected), std::string::npos) << "bit " << bit << " (byte " << bit / 8 << "): " << error;
    b[bit / 8] ^= std::uint8_t(1u << (bit % 8));
  }
  // Trailing bytes make the stored CRC cover the wrong span, so they are caught the same way.
  Bytes longer = good;
  longer.push_back(0);
  EXPECT_NE(error_of(longer).find("checksum mismatch"), std::string::npos) << error_of(longer);
}

TEST(Checkpoint, ImpossibleHeadersAreRefusedBeforeAllocating) {
  std::mt19937_64 rng(test::fresh_seed());
  const Bytes good = to_bytes(serialize_checkpoint(random_checkpoint(rng, {2})));  // sizes at 20, 24, 28

  // Claims 784-65536×63-10: ~2.7e11 parameters (3 TB of arrays) in a 20 kB file. A consistent
  // header with an intact CRC: only the size bound stops it.
  Bytes huge(16);
  std::memcpy(huge.data(), "MNISTCKP", 8);
  put32(huge, 8, 1);
  put32(huge, 12, 1);
  const std::uint32_t count = 65;
  std::uint64_t params = 0;
  std::vector<std::uint32_t> sizes(count, 65536);
  sizes.front() = 784;
  sizes.back() = 10;
  huge.resize(20 + 4 * count + 4 + 8 + 4);
  put32(huge, 16, count);
  for (std::uint32_t i = 0; i < count; ++i) put32(huge, 20 + 4 * i, sizes[i]);
  for (std::uint32_t i = 0; i + 1 < count; ++i) params += std::uint64_t(sizes[i]) * sizes[i + 1] + sizes[i + 1];
  put32(huge, 20 + 4 * count, 0);
  put64(huge, 24 + 4 * count, params);
  huge.resize(huge.size() + 20000);
  reseal(huge);
  const std::string error = error_of(huge);
  EXPECT_NE(error.find("784-65536"), std::string::npos) << error;
  EXPECT_NE(error.find("needs"), std::string::npos) << error;

  for (const HeaderPatch& patch :
       {HeaderPatch{16, 1000000, "layer sizes is impossible"}, HeaderPatch{16, 1, "layer sizes is impossible"},
        HeaderPatch{24, 0, "layer size 0 is impossible"}, HeaderPatch{24, 70000, "layer size 70000"},
        HeaderPatch{20, 785, "do not map 784 pixels to 10 classes"},
        HeaderPatch{36, 12345, "does not match the layer sizes"}}) {
    const std::string e = error_of_patched(good, patch);
    EXPECT_NE(e.find(patch.must_mention), std::string::npos) << e;
  }

  // The configuration length and text.
  const std::size_t config_length_at = 44 + 12 * (784 * 2 + 2 + 2 * 10 + 10) + 20;
  const std::uint32_t config_bytes = get32(good, config_length_at);
  Bytes b = good;
  put32(b, config_length_at, 0xfffffff0u);
  reseal(b);
  EXPECT_NE(error_of(b).find("is impossible"), std::string::npos) << error_of(b);
  b = good;
  b[config_length_at + 4] = '[';  // '{' → '[': valid bytes, not an object
  b[config_length_at + 4 + config_bytes - 1] = ']';
  reseal(b);
  EXPECT_NE(error_of(b).find("not a JSON object"), std::string::npos) << error_of(b);
  b = good;
  b.insert(b.end() - 4, {'x', 'y'});  // bytes past the described end, resealed
  reseal(b);
  EXPECT_NE(error_of(b).find("unexpected bytes"), std::string::npos) << error_of(b);
}

TEST(Checkpoint, AFailedWriteLeavesTheOldCheckpointLoadable) {
  std::mt19937_64 rng(test::fresh_seed());
  const Checkpoint old_checkpoint = random_checkpoint(rng, {4});
  const Checkpoint new_checkpoint = random_checkpoint(rng, {4});
  const fs::path dir = fresh_temp_dir("ckpt-atomic");
  const std::string path = (dir / "last.ckpt").string();
  write_checkpoint(path, old_checkpoint);
  // The temporary file cannot be created where a directory stands (a read-only directory would
  // not stop root), so the write fails before touching last.ckpt.
  fs::create_directory(temporary_path(path));
  EXPECT_THROW(write_checkpoint(path, new_checkpoint), CheckpointError);
  expect_same(read_checkpoint(path), old_checkpoint);
  fs::remove(temporary_path(path));
  write_checkpoint(path, new_checkpoint);
  expect_same(read_checkpoint(path), new_checkpoint);
  fs::remove_all(dir);
}

// --- the background writer -------------------------------------------------------------------

TEST(CheckpointWriter, WritesInTheBackgroundWhatJoinFindsOnDisk) {
  std::mt19937_64 rng(test::fresh_seed());
  const Checkpoint c = random_checkpoint(rng, {int(1 + rng() % 64)});
  const fs::path dir = fresh_temp_dir("ckpt-writer");
  const std::string best = (dir / "best.ckpt").string(), last = (dir / "last.ckpt").string();
  CheckpointWriter writer;
  writer.write(c, {best, last});
  writer.join();
  expect_same(read_checkpoint(last), c);
  EXPECT_EQ(read_text(dir / "best.ckpt"), read_text(dir / "last.ckpt"));  // the same bytes
  EXPECT_EQ(read_text(dir / "last.ckpt"), serialize_checkpoint(c));
  writer.join();  // nothing in flight: returns at once

  // A second write replaces only the paths it names, after the first has ended.
  const Checkpoint next = random_checkpoint(rng, {7});
  writer.write(next, {last});
  writer.join();
  expect_same(read_checkpoint(last), next);
  expect_same(read_checkpoint(best), c);
  expect_no_temporary_files(dir);
  fs::remove_all(dir);
}

TEST(CheckpointWriter, AFailedWriteIsThrownAtTheNextJoinOnce) {
  std::mt19937_64 rng(test::fresh_seed());
  const Checkpoint c = random_checkpoint(rng, {5});
  const fs::path dir = fresh_temp_dir("ckpt-writer-fail");
  // A directory that cannot exist: its parent is a regular file (root ignores permissions).
  write_text(dir / "file", "not a directory");
  const std::string unwritable = (dir / "file" / "last.ckpt").string();
  CheckpointWriter writer;
  writer.write(c, {unwritable});  // returns: the failure happens on the writer's thread
  try {
    writer.join();
    ADD_FAILURE() << "join() did not throw the failed write's error";
  } catch (const CheckpointError& error) {
    // The message write_checkpoint gives for the same failure.
    std::string synchronous;
    try {
      write_checkpoint(unwritable, c);
    } catch (const CheckpointError& same) {
      synchronous = same.what();
    }
    EXPECT_EQ(std::string(error.what()), synchronous);
    EXPECT_NE(std::string(error.what()).find("cannot write"), std::string::npos) << error.what();
  }
  EXPECT_NO_THROW(writer.join());  // reported once

  // A later write() joins the failed one first and throws its error instead of starting.
  const std::string good = (dir / "good.ckpt").string();
  writer.write(c, {unwritable, good});  // stops at the first path that fails
  EXPECT_THROW(writer.write(c, {good}), CheckpointError);
  EXPECT_FALSE(fs::exists(good));
  writer.write(c, {good});
  writer.join();
  expect_same(read_checkpoint(good), c);
  fs::remove_all(dir);
}

// The buffers go round: warm_up's for the first checkpoint, then each written checkpoint's for
// the next, so the loop's copies of the state land in memory that is already touched.
TEST(CheckpointWriter, RecycleHandsBackTheBuffersOfTheLastWrite) {
  std::mt19937_64 rng(test::fresh_seed());
  CheckpointWriter writer;
  EXPECT_TRUE(writer.recycle().state.params.empty());  // nothing yet
  writer.warm_up(ModelKind::kMlp, {784, 9, 10});
  Checkpoint warm = writer.recycle();
  EXPECT_EQ(warm.state.sizes, std::vector<int>({784, 9, 10}));
  EXPECT_EQ(warm.state.params.size(), 784u * 9 + 9 + 9 * 10 + 10);
  EXPECT_EQ(warm.state.adam_v.size(), warm.state.params.size());

  const Checkpoint c = random_checkpoint(rng, {9});
  const fs::path dir = fresh_temp_dir("ckpt-writer-recycle");
  writer.write(c, {(dir / "last.ckpt").string()});
  expect_same(writer.recycle(), c);  // joins first
  expect_same(read_checkpoint((dir / "last.ckpt").string()), c);
  EXPECT_TRUE(writer.recycle().state.params.empty());  // handed back once
  fs::remove_all(dir);
}

TEST(CheckpointWriter, DestructorJoins) {
  std::mt19937_64 rng(test::fresh_seed());
  const Checkpoint c = random_checkpoint(rng, {64, 32});
  const fs::path dir = fresh_temp_dir("ckpt-writer-dtor");
  const std::string path = (dir / "last.ckpt").string();
  {
    CheckpointWriter writer;
    writer.write(c, {path});
  }  // no join(): the destructor waits for the write
  expect_same(read_checkpoint(path), c);
  fs::remove_all(dir);
}

// --- resume ----------------------------------------------------------------------------------

// Random images and labels: enough to train, shuffle and drop out deterministically.
struct SyntheticData {
  LabeledImages train, test;
  explicit SyntheticData(std::mt19937_64& rng) {
    for (LabeledImages* set : {&train, &test}) {
      const int count = set == &train ? 700 : 200;
      set->pixels.resize(std::size_t(count) * kPixels);
      for (auto& p : set->pixels) p = std::uint8_t(rng());
      set->labels = test::random_labels(rng, count);
    }
  }
};

// The training loop in a run directory: train() from scratch or resume_training() from a checkpoint.
TrainResult run_in(const fs::path& dir, const TrainConfig& config, const DataSplit& split, const Checkpoint* from) {
  RunDir run(dir.string(), true);
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, split);
  return from ? resume_training(config, split, *trainer, run, *from) : train(config, split, *trainer, run);
}

TrainConfig small_config(std::uint64_t seed) {
  TrainConfig config;
  config.hidden = {24, 12};
  config.dropout = 0.3f;  // dropout masks are keyed by the step: a wrong step after resume shows
  config.batch_size = 64; // 600 training images: 9 full steps and a partial one per epoch
  config.val_split = 0.f;
  config.seed = seed;
  return config;
}

void expect_same_metrics(const EpochMetrics& a, const EpochMetrics& b) {
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.train_loss, b.train_loss);
  EXPECT_EQ(a.train_accuracy, b.train_accuracy);
  EXPECT_EQ(a.val_loss, b.val_loss);
  EXPECT_EQ(a.val_accuracy, b.val_accuracy);
}

TEST(Resume, OneEpochThenOneMoreEqualsTwoUninterrupted) {
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  const SyntheticData data(rng);
  TrainConfig config = small_config(seed);
  config.val_split = 100.f / 700.f;  // 600 to train, 100 to validate
  const Dataset dataset{data.train, data.test};
  const DataSplit split = split_dataset(dataset, config);
  ASSERT_EQ(split.train.count, 600);
  ASSERT_EQ(split.validation.count, 100);

  const fs::path whole = fresh_temp_dir("resume-whole"), part = fresh_temp_dir("resume-part");
  config.epochs = 2;
  const TrainResult uninterrupted = run_in(whole, config, split, nullptr);

  TrainConfig first = config;
  first.epochs = 1;
  run_in(part, first, split, nullptr);
  const Checkpoint after_one = read_checkpoint((part / "last.ckpt").string());
  EXPECT_EQ(after_one.epoch, 1);
  EXPECT_EQ(after_one.state.step, 10);
  const TrainResult resumed = run_in(part, config, split, &after_one);

  ASSERT_EQ(resumed.epochs.size(), 1u);
  expect_same_metrics(resumed.epochs[0], uninterrupted.epochs[1]);
  EXPECT_EQ(resumed.test.loss_sum, uninterrupted.test.loss_sum);
  EXPECT_EQ(resumed.test.correct, uninterrupted.test.correct);
  // Same weights, moments, step, epoch, best and configuration: the very same bytes.
  const Checkpoint a = read_checkpoint((whole / "last.ckpt").string());
  const Checkpoint b = read_checkpoint((part / "last.ckpt").string());
  expect_same(b, a);
  EXPECT_EQ(read_text(whole / "last.ckpt"), read_text(part / "last.ckpt"));
  EXPECT_EQ(a.epoch, 2);
  EXPECT_EQ(a.state.step, 20);
  fs::remove_all(whole);
  fs::remove_all(part);
}

TEST(Resume, BestCheckpointFollowsValidationAccuracy) {
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  const SyntheticData data(rng);
  TrainConfig config = small_config(seed);
  config.val_split = 100.f / 700.f;
  config.epochs = 4;
  config.lr = 3e-3f;
  const Dataset dataset{data.train, data.test};
  const DataSplit split = split_dataset(dataset, config);
  const fs::path dir = fresh_temp_dir("resume-best");
  const TrainResult result = run_in(dir, config, split, nullptr);

  // best.ckpt is the first epoch with the highest validation accuracy.
  int best_epoch = 0;
  double best = -1;
  for (const EpochMetrics& m : result.epochs)
    if (m.val_accuracy > best) best = m.val_accuracy, best_epoch = m.epoch;
  const Checkpoint last = read_checkpoint((dir / "last.ckpt").string());
  const Checkpoint best_checkpoint = read_checkpoint((dir / "best.ckpt").string());
  EXPECT_EQ(last.epoch, 4);
  EXPECT_EQ(last.best_val_accuracy, best);
  EXPECT_EQ(best_checkpoint.epoch, best_epoch);
  EXPECT_EQ(best_checkpoint.best_val_accuracy, best);
  fs::remove_all(dir);
}

TEST(Resume, WithoutValidationBestIsLast) {
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  const SyntheticData data(rng);
  TrainConfig config = small_config(seed);
  config.epochs = 2;
  const Dataset dataset{data.train, data.test};
  const DataSplit split = split_dataset(dataset, config);
  ASSERT_EQ(split.validation.count, 0);
  const fs::path dir = fresh_temp_dir("resume-noval");
  run_in(dir, config, split, nullptr);
  EXPECT_EQ(read_text(dir / "best.ckpt"), read_text(dir / "last.ckpt"));
  const Checkpoint last = read_checkpoint((dir / "last.ckpt").string());
  EXPECT_EQ(last.epoch, 2);
  EXPECT_TRUE(std::isnan(last.best_val_accuracy));
  fs::remove_all(dir);
}

// A checkpoint that cannot be written stops the loop with write_checkpoint's error, however
// far the background write lets the loop get first: metrics.jsonl holds the epoch it failed
// on, as when the write was part of the loop, and nothing after it.
TEST(Resume, AFailedCheckpointWriteEndsTheRunWithItsError) {
  const std::uint64_t seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  const SyntheticData data(rng);
  TrainConfig config = small_config(seed);
  config.epochs = 3;
  const Dataset dataset{data.train, data.test};
  const DataSplit split = split_dataset(dataset, config);
  const fs::path dir = fresh_temp_dir("resume-write-fails");
  fs::create_directory(dir / "last.ckpt");  // the rename onto it fails
  write_text(dir / "last.ckpt" / "keep", "");
  try {
    run_in(dir, config, split, nullptr);
    ADD_FAILURE() << "the run went on without its checkpoint";
  } catch (const CheckpointError& error) {
    EXPECT_EQ(std::string(error.what()), "cannot write " + (dir / "last.ckpt").string() + ": Is a directory");
  }
  EXPECT_EQ(line_count(read_text(dir / "metrics.jsonl")), 1);
  EXPECT_EQ(read_checkpoint((dir / "best.ckpt").string()).epoch, 1);  // written before last.ckpt
  fs::remove_all(dir);
}

// --- through the command line ---------------------------------------------------------------

// A checkpoint of an untrained 784-8-10 model after "epoch 1": enough for the checks that fail
// before any training.
std::string untrained_checkpoint(const fs::path& dir) {
  TrainConfig config;
  config.hidden = {8};
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, DataSplit{});
  const std::string path = (dir / "untrained.ckpt").string();
  write_checkpoint(path, Checkpoint{trainer->state(), 1, 0.5, to_json(config)});
  return path;
}

TEST(ResumeCli, MismatchedHiddenOrFinishedRunIsOneClearLine) {
  const fs::path dir = fresh_temp_dir("resume-cli-bad");
  const std::string checkpoint = untrained_checkpoint(dir);

  const Outcome hidden = run_mnist("train --device cpu --hidden 16 --epochs 3 --resume " + checkpoint);
  EXPECT_EQ(hidden.status, 2) << hidden.output;
  EXPECT_EQ(line_count(hidden.output), 1) << hidden.output;
  for (const char* expected : {"784-8-10", "784-16-10", "--hidden", checkpoint.c_str()})
    EXPECT_NE(hidden.output.find(expected), std::string::npos) << expected << " in " << hidden.output;

  const Outcome done = run_mnist("train --device cpu --hidden 8 --epochs 1 --resume " + checkpoint);
  EXPECT_EQ(done.status, 2) << done.output;
  EXPECT_EQ(line_count(done.output), 1) << done.output;
  EXPECT_NE(done.output.find("has completed epoch 1 (--epochs is 1)"), std::string::npos) << done.output;

  write_text(dir / "broken.ckpt", read_text(checkpoint).substr(0, 100));
  const Outcome broken = run_mnist("train --device cpu --hidden 8 --epochs 3 --resume " + (dir / "broken.ckpt").string());
  EXPECT_EQ(broken.status, 1) << broken.output;
  EXPECT_EQ(line_count(broken.output), 1) << broken.output;
  EXPECT_NE(broken.output.find("truncated"), std::string::npos) << broken.output;
  fs::remove_all(dir);
}

// A checkpoint's stored configuration is read from a file, so its text can be anything: the
// resume warning that quotes it shows it as ASCII JSON, cut short, on one line.
TEST(ResumeCli, WarningQuotesAStoredValueAsShortAsciiText) {
  const fs::path dir = fresh_temp_dir("resume-cli-text");
  TrainConfig config;
  config.hidden = {8};
  nlohmann::json stored = to_json(config);
  stored["dataset"] = "mn\u009b2J\u202eist" + std::string(200, 'x');  // a C1 control (CSI), a bidi override
  const std::string checkpoint = (dir / "crafted.ckpt").string();
  write_checkpoint(checkpoint, Checkpoint{make_cpu_trainer(config, DataSplit{})->state(), 1, 0.5, stored});

  const Outcome resumed = run_mnist("train --device cpu --hidden 8 --epochs 2 --train-subset 500 --no-report --out " +
                                    (dir / "run").string() + " --resume " + checkpoint);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const std::size_t at = resumed.output.find("warning: --dataset");
  ASSERT_NE(at, std::string::npos) << resumed.output;
  const std::string warning = resumed.output.substr(at, resumed.output.find('\n', at) - at);
  EXPECT_NE(warning.find("\\u009b"), std::string::npos) << warning;
  EXPECT_LT(warning.size(), 200u) << warning;
  EXPECT_TRUE(std::all_of(warning.begin(), warning.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) << warning;
  fs::remove_all(dir);
}

// report.json and checkpoints store a float option as the decimal it was given as (0.2, not
// the widened 0.20000000298023224), and that decimal reads back as the very same float.
TEST(Config, FloatOptionsAreStoredAsTheDecimalsGiven) {
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 200; ++trial) {
    // A decimal of 1 to 4 significant digits, e.g. "0.0371", as a user would type it.
    const std::string text = "0." + std::string(rng() % 3, '0') + std::to_string(1 + rng() % 9999);
    TrainConfig config;
    config.dropout = config.lr = config.weight_decay = config.label_smoothing = config.val_split = std::stof(text);
    const nlohmann::json stored = to_json(config);
    for (const char* key : {"dropout", "lr", "weight_decay", "label_smoothing", "val_split"}) {
      EXPECT_EQ(stored[key].get<double>(), std::stod(text)) << key << " of " << text << ": " << stored[key];
      EXPECT_EQ(float(stored[key].get<double>()), config.dropout) << key << " of " << text;
    }
  }
}

TEST(Config, StoredSettingsCompareAsTheFloatsTheOptionsAre) {
  const nlohmann::json widened = double(0.2f), decimal = 0.2;
  EXPECT_NE(widened, decimal);  // what earlier versions wrote and what this one writes
  EXPECT_TRUE(same_setting(widened, decimal));
  EXPECT_TRUE(same_setting(decimal, widened));
  EXPECT_FALSE(same_setting(decimal, 0.3));
  EXPECT_FALSE(same_setting(decimal, double(std::nextafter(0.2f, 1.f))));
  EXPECT_FALSE(same_setting(decimal, "0.2"));
  EXPECT_FALSE(same_setting(1e39, 2e39));  // beyond the float range: compared as they are
  EXPECT_TRUE(same_setting(1e39, 1e39));
  EXPECT_TRUE(same_setting(128, 128));
  EXPECT_FALSE(same_setting(128, 64));
  EXPECT_TRUE(same_setting("mnist", "mnist"));
  EXPECT_FALSE(same_setting("mnist", "fashion"));
}

// A checkpoint from before the decimals (its floats widened to double) resumes with the same
// options without a warning that --dropout or --lr differ.
TEST(ResumeCli, AnOlderCheckpointsWidenedFloatsAreTheSameOptions) {
  const fs::path dir = fresh_temp_dir("resume-cli-widened");
  TrainConfig config;
  config.hidden = {8};
  config.train_subset = 500;
  nlohmann::json stored = to_json(config);
  for (const char* key : {"dropout", "lr", "val_split"}) stored[key] = double(float(stored[key].get<double>()));
  ASSERT_NE(stored["dropout"], to_json(config)["dropout"]);
  const std::string checkpoint = (dir / "older.ckpt").string();
  write_checkpoint(checkpoint, Checkpoint{make_cpu_trainer(config, DataSplit{})->state(), 1, 0.5, stored});

  const Outcome resumed = run_mnist("train --device cpu --hidden 8 --epochs 2 --train-subset 500 --no-report --out " +
                                    (dir / "run").string() + " --resume " + checkpoint);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_EQ(resumed.output.find("warning"), std::string::npos) << resumed.output;
  fs::remove_all(dir);
}

std::vector<nlohmann::json> metrics_lines(const fs::path& dir) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(read_text(dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST(ResumeCli, ContinuesItsRunDirectoryAndMatchesAnUninterruptedRun) {
  const fs::path whole = fresh_temp_dir("resume-cli-whole"), part = fresh_temp_dir("resume-cli-part");
  // A schedule that does not depend on --epochs (warm-up, then halving each epoch), so the run
  // of 1 epoch resumed to 2 follows the same rates as the run of 2; and augmented batches, whose
  // draws the resumed run must continue from the stored step.
  const std::string options = "train --device cpu --train-subset 2000 --hidden 16 --batch-size 100 "
                              "--lr-schedule step --lr-step 1 --lr-decay 0.5 --warmup-epochs 0.5 "
                              "--augment elastic --rotate 12 --elastic-sigma 5 ";
  const Outcome a = run_mnist(options + "--epochs 2 --out " + whole.string());
  ASSERT_EQ(a.status, 0) << a.output;
  const Outcome b1 = run_mnist(options + "--epochs 1 --out " + part.string());
  ASSERT_EQ(b1.status, 0) << b1.output;
  // As if the run had crashed after logging epoch 2 but before writing its checkpoint.
  std::ofstream(part / "metrics.jsonl", std::ios::app) << "{\"epoch\":2,\"train_loss\":9}\n";

  const Outcome b2 = run_mnist(options + "--epochs 2 --resume " + (part / "last.ckpt").string());
  ASSERT_EQ(b2.status, 0) << b2.output;
  EXPECT_NE(b2.output.find("resuming"), std::string::npos) << b2.output;
  EXPECT_EQ(b2.output.find("warning"), std::string::npos) << b2.output;

  const std::vector<nlohmann::json> want = metrics_lines(whole), got = metrics_lines(part);
  ASSERT_EQ(got.size(), 2u) << read_text(part / "metrics.jsonl");
  for (std::size_t i = 0; i < 2; ++i) {
    for (const char* key : {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"})
      EXPECT_EQ(got[i][key], want[i][key]) << "epoch " << i + 1 << " " << key;
  }
  EXPECT_FLOAT_EQ(float(got[1]["lr"].get<double>()), 0.0005f) << "halved once after epoch 1";
  EXPECT_EQ(read_text(part / "last.ckpt"), read_text(whole / "last.ckpt"));
  const nlohmann::json report_a = nlohmann::json::parse(read_text(whole / "report.json"));
  const nlohmann::json report_b = nlohmann::json::parse(read_text(part / "report.json"));
  EXPECT_EQ(report_b["test"]["accuracy"], report_a["test"]["accuracy"]);
  EXPECT_EQ(report_b["test"]["confusion"], report_a["test"]["confusion"]);
  EXPECT_EQ(report_b["epochs"].size(), 2u);

  // A different learning rate is allowed (fine-tuning) but pointed out.
  const Outcome c = run_mnist(options + "--epochs 3 --lr 0.0005 --resume " + (part / "last.ckpt").string());
  ASSERT_EQ(c.status, 0) << c.output;
  EXPECT_NE(c.output.find("warning: --lr"), std::string::npos) << c.output;
  EXPECT_EQ(metrics_lines(part).size(), 3u);
  fs::remove_all(whole);
  fs::remove_all(part);
}

// "test: accuracy 0.9123 (9123/10000)  loss 0.3012"
struct PrintedTest {
  unsigned long long correct = 0, count = 0;
  double loss = -1;
};
PrintedTest parse_test_line(const std::string& output) {
  PrintedTest t;
  const std::size_t at = output.find("test: accuracy");
  if (at == std::string::npos) return t;
  double accuracy;
  std::sscanf(output.c_str() + at, "test: accuracy %lf (%llu/%llu)  loss %lf", &accuracy, &t.correct, &t.count,
              &t.loss);
  return t;
}

TEST(EvaluateCli, PrintsTheTestAccuracyOfTheRunsReport) {
  const fs::path dir = fresh_temp_dir("evaluate");
  const Outcome trained = test::run_program(
      std::string("OPENBLAS_NUM_THREADS=1 ") + MNIST_BINARY,
      "train --device cpu --train-subset 3000 --epochs 1 --hidden 32 --label-smoothing 0.1 --out " + dir.string());
  ASSERT_EQ(trained.status, 0) << trained.output;
  const nlohmann::json report = nlohmann::json::parse(read_text(dir / "report.json"));
  EXPECT_EQ(report["timings"]["cuda_graph"], false);  // the CPU has none; a missing key fails too
  // The loop's waits for its checkpoints: a number of seconds, never missing or negative.
  ASSERT_TRUE(report["timings"]["checkpoint_stall_seconds"].is_number()) << report["timings"];
  EXPECT_GE(report["timings"]["checkpoint_stall_seconds"].get<double>(), 0.0);
  EXPECT_EQ(report["device"], "CPU (OpenBLAS, 1 thread)");  // the thread count sets the GEMMs' rounding

  const Outcome evaluated = run_mnist("evaluate --device cpu --model " + (dir / "last.ckpt").string());
  ASSERT_EQ(evaluated.status, 0) << evaluated.output;
  const PrintedTest t = parse_test_line(evaluated.output);
  ASSERT_EQ(t.count, 10000u) << evaluated.output;
  EXPECT_EQ(double(t.correct) / double(t.count), report["test"]["accuracy"].get<double>()) << evaluated.output;
  EXPECT_NEAR(t.loss, report["test"]["loss"].get<double>(), 5e-5) << evaluated.output;  // printed to 4 decimals
  EXPECT_NE(evaluated.output.find("confusion matrix"), std::string::npos) << evaluated.output;
  EXPECT_NE(evaluated.output.find("784-32-10"), std::string::npos) << evaluated.output;
  fs::remove_all(dir);
}

// The reader accepts an MLP without hidden layers (784-10); evaluate and predict run it too.
TEST(EvaluateCli, AnMlpWithoutHiddenLayersEvaluates) {
  const fs::path dir = fresh_temp_dir("evaluate-784-10");
  TrainConfig config;
  config.hidden = {};
  const std::unique_ptr<Trainer> trainer = make_cpu_trainer(config, DataSplit{});
  const std::string path = (dir / "linear.ckpt").string();
  write_checkpoint(path, Checkpoint{trainer->state(), 1, 0.5, to_json(config)});
  const Outcome evaluated = run_mnist("evaluate --device cpu --model " + path);
  EXPECT_EQ(evaluated.status, 0) << evaluated.output;
  EXPECT_NE(evaluated.output.find("784-10 MLP"), std::string::npos) << evaluated.output;
  EXPECT_EQ(parse_test_line(evaluated.output).count, 10000u) << evaluated.output;
  fs::remove_all(dir);
}

// Results that could not be written (stdout on a full disk, or closed) are an error, not a
// silent success; stderr (here the test's pipe: the braces redirect stdout alone) says so.
TEST(EvaluateCli, AStandardOutputThatCannotBeWrittenIsAnError) {
  const fs::path dir = fresh_temp_dir("evaluate-full");
  const std::string model = untrained_checkpoint(dir);
  for (const char* redirect : {">/dev/full", ">&-"}) {
    const Outcome outcome =
        run_program("{ " + std::string(MNIST_BINARY), "evaluate --device cpu --model " + model + " " + redirect + "; }");
    EXPECT_EQ(outcome.status, 1) << redirect << ": " << outcome.output;
    EXPECT_NE(outcome.output.find("mnist: error: writing to standard output failed ("), std::string::npos)
        << redirect << ": " << outcome.output;
  }
  fs::remove_all(dir);
}

// Evaluating on another dataset than the model's is allowed but said, in one warning line.
TEST(EvaluateCli, AnotherDatasetThanTheModelsIsWarnedAbout) {
  const fs::path dir = fresh_temp_dir("evaluate-other-dataset");
  TrainConfig config;
  config.hidden = {4};
  const std::string path = (dir / "digits.ckpt").string();
  write_checkpoint(path, Checkpoint{make_cpu_trainer(config, DataSplit{})->state(), 1, 0.5, to_json(config)});
  // Fashion-MNIST's name on MNIST's files: the warning comes from the names, not the pixels.
  const Outcome other = run_mnist("evaluate --device cpu --dataset fashion --data-dir data/mnist --model " + path);
  EXPECT_EQ(other.status, 0) << other.output;
  EXPECT_NE(other.output.find("mnist: warning: " + path + " was trained on mnist; evaluating it on fashion\n"),
            std::string::npos)
      << other.output;
  EXPECT_NE(other.output.find("1 epoch trained on mnist; testing on the 10000 images of data/mnist"),
            std::string::npos)
      << other.output;
  const Outcome same = run_mnist("evaluate --device cpu --dataset mnist --model " + path);
  EXPECT_EQ(same.status, 0) << same.output;
  EXPECT_EQ(same.output.find("warning"), std::string::npos) << same.output;
  fs::remove_all(dir);
}

TEST(EvaluateCli, BadCheckpointOrDataIsOneClearLine) {
  const fs::path dir = fresh_temp_dir("evaluate-bad");
  const std::string good = untrained_checkpoint(dir);
  write_text(dir / "notes.txt", "hello\n");
  // Stored label smoothing that --label-smoothing would refuse: evaluate's test loss uses it.
  // (1e39 overflows a float.)
  for (const char* value : {"1e39", "-3"}) {
    TrainConfig config;
    config.hidden = {8};
    nlohmann::json stored = to_json(config);
    stored["label_smoothing"] = std::stod(value);
    write_checkpoint((dir / (std::string("smoothing") + value + ".ckpt")).string(),
                     Checkpoint{make_cpu_trainer(config, DataSplit{})->state(), 1, 0.5, stored});
  }
  struct Case {
    std::string args, must_mention;
  };
  for (const Case& c : {Case{"--model " + (dir / "missing.ckpt").string(), "missing.ckpt: checkpoint not found"},
                        Case{"--model " + dir.string(), "is a directory"},
                        Case{"--model " + (dir / "notes.txt").string(), "not an mnist checkpoint"},
                        Case{"--model " + good + " --data-dir " + (dir / "nodata").string(), "nodata"},
                        Case{"--model " + good + " --dataset cifar", "--dataset"},
                        Case{"--model " + good + " --device tpu", "--device"}, Case{"", "--model"},
                        Case{"--model " + (dir / "smoothing1e39.ckpt").string(), "label_smoothing 1e+39 is not in [0, 1)"},
                        Case{"--model " + (dir / "smoothing-3.ckpt").string(), "label_smoothing -3 is not in [0, 1)"}}) {
    const bool device_given = c.args.find("--device") != std::string::npos;
    const Outcome outcome = run_mnist("evaluate " + c.args + (device_given ? "" : " --device cpu"));
    EXPECT_NE(outcome.status, 0) << c.args << ": " << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << c.args << ": " << outcome.output;
    EXPECT_NE(outcome.output.find(c.must_mention), std::string::npos) << c.args << ": " << outcome.output;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mnist
