// Digit images (include/mnist/image_io.h) and `mnist predict`: PGM and PNG decode to exactly
// the pixels that were written (every PNG colour type and row filter), every bad file is one
// clear error, and a briefly trained model reads MNIST's first test image, a 7, as a 7.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "cli_util.h"
#include "mnist/checkpoint.h"
#include "mnist/idx.h"
#include "mnist/image_io.h"
#include "mnist/trainer.h"
#include "test_util.h"

namespace mnist {
namespace {

namespace fs = std::filesystem;
using test::fresh_temp_dir;
using test::line_count;
using test::Outcome;
using test::read_text;
using test::run_mnist;
using test::write_text;

using Pixels = std::vector<std::uint8_t>;

Pixels random_pixels(std::mt19937_64& rng, std::size_t n) {
  Pixels p(n);
  for (auto& x : p) x = std::uint8_t(rng());
  return p;
}

// --- writers: the formats as another program would produce them ---------------------------

std::string pgm_p5(const Pixels& p, int width = 28, int height = 28) {
  return "P5\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n" + std::string(p.begin(), p.end());
}

std::string pgm_p2(const Pixels& p, int maxval = 255) {
  std::string text = "P2\n# written by test_predict\n28 28\n" + std::to_string(maxval) + "\n";
  for (std::size_t i = 0; i < p.size(); ++i) text += std::to_string(p[i]) + ((i + 1) % 28 ? " " : "\n");
  return text;
}

std::string be32(std::uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

std::string chunk(const std::string& type, const std::string& data) {
  const std::string body = type + data;
  const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()));
  return be32(std::uint32_t(data.size())) + body + be32(std::uint32_t(crc));
}

int paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

struct PngOptions {
  int width = 28, height = 28, depth = 8, color = 0, interlace = 0;
  int filter = -1;  // -1: row y uses filter y % 5, so every filter type is exercised
};

// `samples` holds height rows of width × channels bytes.
std::string png(const Pixels& samples, const PngOptions& o) {
  const int channels = o.color == 0 ? 1 : o.color == 4 ? 2 : o.color == 2 ? 3 : o.color == 6 ? 4 : 1;
  const std::size_t stride = std::size_t(o.width) * channels;
  std::string filtered;
  for (int y = 0; y < o.height && (y + 1) * stride <= samples.size(); ++y) {
    const int f = o.filter >= 0 ? o.filter : y % 5;
    filtered.push_back(char(f));
    for (std::size_t x = 0; x < stride; ++x) {
      const int a = x >= std::size_t(channels) ? samples[y * stride + x - channels] : 0;
      const int b = y > 0 ? samples[(y - 1) * stride + x] : 0;
      const int c = y > 0 && x >= std::size_t(channels) ? samples[(y - 1) * stride + x - channels] : 0;
      const int predictor = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : f == 4 ? paeth(a, b, c) : 0;
      filtered.push_back(char(samples[y * stride + x] - predictor));
    }
  }
  uLongf size = compressBound(uLong(filtered.size()));
  std::string compressed(size, '\0');
  compress2(reinterpret_cast<Bytef*>(compressed.data()), &size, reinterpret_cast<const Bytef*>(filtered.data()),
            uLong(filtered.size()), 9);
  compressed.resize(size);

  const std::string header = be32(o.width) + be32(o.height) + char(o.depth) + char(o.color) + '\0' + '\0' +
                             char(o.interlace);
  // The image data split over three IDAT chunks (with a text chunk before them), as encoders may.
  const std::size_t third = compressed.size() / 3;
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", header) + chunk("tEXt", std::string("Comment\0test", 12)) +
         chunk("IDAT", compressed.substr(0, third)) + chunk("IDAT", compressed.substr(third, third)) +
         chunk("IDAT", compressed.substr(2 * third)) + chunk("IEND", "");
}

std::string error_of(const fs::path& path) {
  try {
    read_digit_image(path.string());
  } catch (const ImageError& error) {
    return error.what();
  }
  return "";
}

// --- reading --------------------------------------------------------------------------------

TEST(ImageIo, PgmBinaryAndPlainGiveTheWrittenPixels) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("image-pgm");
  const Pixels pixels = random_pixels(rng, kPixels);
  write_text(dir / "a.pgm", pgm_p5(pixels));
  write_text(dir / "b.pgm", pgm_p2(pixels));
  EXPECT_EQ(read_digit_image((dir / "a.pgm").string()), pixels);
  EXPECT_EQ(read_digit_image((dir / "b.pgm").string()), pixels);

  // A smaller maxval is rescaled to 0..255 (rounded): 15 → 255, 7 → 119, 1 → 17.
  Pixels small(kPixels), scaled(kPixels);
  for (int i = 0; i < kPixels; ++i) {
    small[i] = std::uint8_t(rng() % 16);
    scaled[i] = std::uint8_t((small[i] * 255 + 7) / 15);
  }
  write_text(dir / "c.pgm", pgm_p2(small, 15));
  EXPECT_EQ(read_digit_image((dir / "c.pgm").string()), scaled);
  fs::remove_all(dir);
}

TEST(ImageIo, PngOfEveryColourTypeAndFilterGivesTheWrittenPixels) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("image-png");
  const Pixels gray = random_pixels(rng, kPixels);
  const Pixels alpha = random_pixels(rng, kPixels);
  const Pixels rgb = random_pixels(rng, 3 * kPixels);

  Pixels gray_alpha, rgba, rgb_gray, gray_over_black(kPixels), luma(kPixels), luma_over_black(kPixels);
  for (int i = 0; i < kPixels; ++i) {
    gray_alpha.insert(gray_alpha.end(), {gray[i], alpha[i]});
    rgba.insert(rgba.end(), {rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], alpha[i]});
    rgb_gray.insert(rgb_gray.end(), {gray[i], gray[i], gray[i]});
    gray_over_black[i] = std::uint8_t((gray[i] * alpha[i] + 127) / 255);
    luma[i] = std::uint8_t((299 * rgb[3 * i] + 587 * rgb[3 * i + 1] + 114 * rgb[3 * i + 2] + 500) / 1000);
    luma_over_black[i] = std::uint8_t((luma[i] * alpha[i] + 127) / 255);
  }
  struct Case {
    const char* name;
    int color;
    const Pixels* samples;
    const Pixels* expected;
  };
  for (const Case& c : {Case{"gray", 0, &gray, &gray}, Case{"gray_alpha", 4, &gray_alpha, &gray_over_black},
                        Case{"rgb_of_gray", 2, &rgb_gray, &gray}, Case{"rgb", 2, &rgb, &luma},
                        Case{"rgba", 6, &rgba, &luma_over_black}}) {
    for (int filter : {-1, 0, 1, 2, 3, 4}) {
      PngOptions o;
      o.color = c.color;
      o.filter = filter;
      const fs::path path = dir / (std::string(c.name) + ".png");
      write_text(path, png(*c.samples, o));
      EXPECT_EQ(read_digit_image(path.string()), *c.expected) << c.name << " filter " << filter;
    }
  }
  fs::remove_all(dir);
}

// --- every bad file is one clear error ------------------------------------------------------

TEST(ImageIo, OtherSizesAreRefusedNotResized) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("image-size");
  write_text(dir / "wide.pgm", pgm_p5(random_pixels(rng, 29 * 28), 29, 28));
  PngOptions o;
  o.width = o.height = 32;
  write_text(dir / "big.png", png(random_pixels(rng, 32 * 32), o));
  for (const auto& [name, size] : {std::pair{"wide.pgm", "29x28"}, std::pair{"big.png", "32x32"}}) {
    const std::string error = error_of(dir / name);
    EXPECT_NE(error.find((dir / name).string()), std::string::npos) << error;
    EXPECT_NE(error.find(size), std::string::npos) << error;
    EXPECT_NE(error.find("28x28"), std::string::npos) << error;
  }
  fs::remove_all(dir);
}

TEST(ImageIo, WhatIsNotAReadableImageIsNamed) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("image-bad");
  const Pixels gray = random_pixels(rng, kPixels);
  write_text(dir / "notes.txt", "a 7, drawn by hand\n");
  write_text(dir / "empty.png", "");
  write_text(dir / "photo.jpg", "\xff\xd8\xff\xe0 JFIF");
  write_text(dir / "colour.ppm", "P6\n28 28\n255\n" + std::string(3 * kPixels, '\0'));
  write_text(dir / "deep.pgm", "P5\n28 28\n65535\n" + std::string(2 * kPixels, '\0'));
  write_text(dir / "garbled.pgm", "P2\n28 28\n255\n1 2 x 4\n");
  write_text(dir / "over.pgm", "P2\n28 28\n15\n1 2 16 4\n");
  write_text(dir / "escape.pgm", "P2\n28 28\n255\n1 2 \x1b[2J 4\n");  // a terminal control code
  PngOptions o;
  o.interlace = 1;
  write_text(dir / "interlaced.png", png(gray, o));
  o = {};
  o.depth = 16;
  write_text(dir / "deep.png", png(gray, o));
  o = {};
  o.color = 3;
  write_text(dir / "palette.png", png(gray, o));
  o = {};
  o.filter = 5;  // no such filter type
  write_text(dir / "filter.png", png(gray, o));
  std::string crc = png(gray, PngOptions{});
  crc[70] ^= 1;  // inside the first IDAT chunk's data (signature 8, IHDR 25, tEXt 24 bytes, IDAT header 8)
  write_text(dir / "crc.png", crc);
  std::string short_data = png(Pixels(gray.begin(), gray.begin() + 27 * 28), PngOptions{});  // 27 rows of data
  write_text(dir / "rows.png", short_data);
  const std::string good = png(gray, PngOptions{});
  const std::size_t text_type = 8 + 25 + 4;  // the tEXt chunk's type, after the signature and IHDR
  std::string line_break = good.substr(0, text_type) + "tE\n\x1a" + good.substr(text_type + 4);
  write_text(dir / "type.png", line_break);  // its CRC is wrong too: the type is checked first

  struct Case {
    std::string name, must_mention;
  };
  for (const Case& c : {Case{"missing.pgm", "file not found"}, Case{"", "is a directory"},
                        Case{"notes.txt", "not a PGM or PNG image"}, Case{"empty.png", "is empty"},
                        Case{"photo.jpg", "JPEG"}, Case{"colour.ppm", "P6"}, Case{"deep.pgm", "16-bit PGM"},
                        Case{"garbled.pgm", "found 'x'"}, Case{"over.pgm", "above maxval 15"},
                        Case{"interlaced.png", "interlaced"}, Case{"deep.png", "16-bit PNG"},
                        Case{"palette.png", "palette"}, Case{"filter.png", "filter type 5"},
                        Case{"crc.png", "CRC mismatch in the IDAT chunk"}, Case{"rows.png", "shorter"},
                        Case{"escape.pgm", "found byte 0x1B"}, Case{"type.png", "chunk type with byte 0x0A"}}) {
    const fs::path path = c.name.empty() ? dir : dir / c.name;
    const std::string error = error_of(path);
    EXPECT_EQ(error.rfind(path.string() + ": ", 0), 0u) << error;
    EXPECT_NE(error.find(c.must_mention), std::string::npos) << c.name << ": " << error;
    // One line of printable text, whatever bytes the file holds.
    EXPECT_TRUE(std::all_of(error.begin(), error.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; }))
        << c.name << ": " << error;
  }
  fs::remove_all(dir);
}

TEST(ImageIo, EveryTruncationIsAnError) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("image-cut");
  const Pixels gray = random_pixels(rng, kPixels);
  Pixels plain = gray;
  plain.back() = 100;  // three digits: a cut inside it is a different but valid file, so stop before it
  const std::string p2 = pgm_p2(plain);
  struct File {
    std::string name, bytes;
    std::size_t valid_from;
  };
  for (const File& f : {File{"a.png", png(gray, PngOptions{}), 0}, File{"a.pgm", pgm_p5(gray), 0},
                        File{"b.pgm", p2, p2.size() - 4}}) {
    const std::size_t end = f.valid_from ? f.valid_from : f.bytes.size();
    for (std::size_t length = 0; length < end; ++length) {
      write_text(dir / f.name, f.bytes.substr(0, length));
      ASSERT_NE(error_of(dir / f.name), "") << f.name << " cut at " << length;
    }
    write_text(dir / f.name, f.bytes.substr(0, f.bytes.size() / 2));
    EXPECT_NE(error_of(dir / f.name).find("truncated"), std::string::npos) << error_of(dir / f.name);
  }
  fs::remove_all(dir);
}

// --- `mnist predict` ------------------------------------------------------------------------

TEST(PredictCli, ReadsMnistsFirstTestImageAsASeven) {
  const fs::path dir = fresh_temp_dir("predict");
  const Outcome trained =
      run_mnist("train --device cpu --train-subset 5000 --epochs 1 --hidden 64 --out " + (dir / "run").string());
  ASSERT_EQ(trained.status, 0) << trained.output;

  const ImageSet images = load_idx_images("data/mnist/t10k-images-idx3-ubyte.gz");
  ASSERT_EQ(load_idx_labels("data/mnist/t10k-labels-idx1-ubyte.gz")[0], 7);
  const Pixels seven(images.pixels.begin(), images.pixels.begin() + kPixels);
  Pixels rgb;
  for (std::uint8_t v : seven) rgb.insert(rgb.end(), {v, v, v});
  PngOptions colour;
  colour.color = 2;
  write_text(dir / "seven.pgm", pgm_p5(seven));
  write_text(dir / "seven-plain.pgm", pgm_p2(seven));
  write_text(dir / "seven.png", png(seven, PngOptions{}));
  write_text(dir / "seven-rgb.png", png(rgb, colour));

  std::string files;
  for (const char* name : {"seven.pgm", "seven-plain.pgm", "seven.png", "seven-rgb.png"})
    files += " " + (dir / name).string();
  const Outcome predicted = run_mnist("predict --model " + (dir / "run" / "last.ckpt").string() + files);
  ASSERT_EQ(predicted.status, 0) << predicted.output;
  EXPECT_EQ(line_count(predicted.output), 4) << predicted.output;
  for (const char* name : {"seven.pgm", "seven-plain.pgm", "seven.png", "seven-rgb.png"}) {
    const std::string prefix = (dir / name).string() + ": 7 (p=";
    const std::size_t at = predicted.output.find(prefix);
    ASSERT_NE(at, std::string::npos) << name << " in\n" << predicted.output;
    const double p = std::stod(predicted.output.substr(at + prefix.size()));
    EXPECT_GT(p, 0.5) << predicted.output;
    EXPECT_LE(p, 1.0) << predicted.output;
  }
  fs::remove_all(dir);
}

// A Fashion-MNIST checkpoint names the class of the label it prints; an MNIST one prints the
// digit alone. The model is untrained, so any label may come out: the name must be its own.
TEST(PredictCli, AFashionModelNamesTheClassOfItsLabel) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("predict-fashion");
  TrainConfig config;
  config.hidden = {8};
  config.seed = rng();
  const std::string image = (dir / "item.pgm").string();
  write_text(image, pgm_p5(random_pixels(rng, kPixels)));
  const char* const names[10] = {"T-shirt/top", "trouser", "pullover", "dress", "coat",
                                 "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
  for (const char* dataset : {"fashion", "mnist"}) {
    config.dataset = dataset;
    const std::string model = (dir / (std::string(dataset) + ".ckpt")).string();
    write_checkpoint(model, Checkpoint{make_cpu_trainer(config, DataSplit{})->state(), 1, 0.5, to_json(config)});
    const Outcome outcome = run_mnist("predict --model " + model + " " + image);
    ASSERT_EQ(outcome.status, 0) << outcome.output;
    const std::string prefix = image + ": ";
    ASSERT_EQ(outcome.output.rfind(prefix, 0), 0u) << outcome.output;
    const int label = outcome.output[prefix.size()] - '0';
    ASSERT_TRUE(label >= 0 && label <= 9) << outcome.output;
    const std::string named = std::string(dataset) == "fashion" ? std::string(" ") + names[label] : std::string();
    EXPECT_EQ(outcome.output.substr(prefix.size() + 1, named.size() + 4), named + " (p=") << outcome.output;
  }
  fs::remove_all(dir);
}

TEST(PredictCli, EachBadFileIsOneLineNamingIt) {
  std::mt19937_64 rng(test::fresh_seed());
  const fs::path dir = fresh_temp_dir("predict-bad");
  TrainConfig config;
  config.hidden = {8};
  const std::string model = (dir / "untrained.ckpt").string();
  write_checkpoint(model, Checkpoint{make_cpu_trainer(config, DataSplit{})->state(), 1, 0.5, to_json(config)});
  const Pixels gray = random_pixels(rng, kPixels);
  write_text(dir / "good.pgm", pgm_p5(gray));
  write_text(dir / "cut.png", png(gray, PngOptions{}).substr(0, 100));
  write_text(dir / "notes.txt", "not an image\n");
  write_text(dir / "wide.pgm", pgm_p5(random_pixels(rng, 30 * 28), 30, 28));
  fs::create_directory(dir / "folder");

  for (const char* name : {"cut.png", "notes.txt", "wide.pgm", "folder", "missing.png"}) {
    const Outcome outcome = run_mnist("predict --model " + model + " " + (dir / name).string());
    EXPECT_EQ(outcome.status, 1) << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << outcome.output;
    EXPECT_EQ(outcome.output.rfind("mnist: error: " + (dir / name).string() + ": ", 0), 0u) << outcome.output;
  }
  // The good files are still predicted; the exit status reports the bad one.
  const Outcome mixed = run_mnist("predict --model " + model + " " + (dir / "good.pgm").string() + " " +
                                  (dir / "notes.txt").string() + " " + (dir / "good.pgm").string());
  EXPECT_EQ(mixed.status, 1) << mixed.output;
  EXPECT_EQ(line_count(mixed.output), 3) << mixed.output;
  EXPECT_NE(mixed.output.find((dir / "good.pgm").string() + ": "), std::string::npos) << mixed.output;

  // Names with a line break and an escape code (downloaded files can be called anything) are
  // shown with those bytes as \xNN: a name cannot forge a second line or drive the terminal.
  const fs::path odd_good = dir / "good\n\x1b[2J.pgm", odd_bad = dir / "bad\n.txt";
  fs::copy_file(dir / "good.pgm", odd_good);
  write_text(odd_bad, "not an image\n");
  const Outcome odd = run_mnist("predict --model " + model + " '" + odd_good.string() + "' '" + odd_bad.string() + "'");
  EXPECT_EQ(odd.status, 1) << odd.output;
  EXPECT_EQ(line_count(odd.output), 2) << odd.output;
  EXPECT_NE(odd.output.find((dir / "good\\x0A\\x1B[2J.pgm: ").string()), std::string::npos) << odd.output;
  EXPECT_NE(odd.output.find("mnist: error: " + (dir / "bad\\x0A.txt: not a PGM").string()), std::string::npos)
      << odd.output;
  EXPECT_EQ(odd.output.find('\x1b'), std::string::npos) << odd.output;

  // A bad checkpoint or no files at all: one line before any image is read.
  for (const std::string& args : {"--model " + (dir / "notes.txt").string() + " " + (dir / "good.pgm").string(),
                                  "--model " + model, std::string((dir / "good.pgm").string())}) {
    const Outcome outcome = run_mnist("predict " + args);
    EXPECT_NE(outcome.status, 0) << args << ": " << outcome.output;
    EXPECT_EQ(line_count(outcome.output), 1) << args << ": " << outcome.output;
  }
  fs::remove_all(dir);
}

TEST(PredictCli, HelpSaysWhatImagesItReads) {
  const Outcome help = run_mnist("predict --help");
  EXPECT_EQ(help.status, 0);
  for (const char* expected : {"--model", "28x28", "PGM", "PNG", "white", "black"})
    EXPECT_NE(help.output.find(expected), std::string::npos) << "missing " << expected << " in:\n" << help.output;
  const Outcome evaluate = run_mnist("evaluate --help");
  EXPECT_EQ(evaluate.status, 0);
  for (const char* expected : {"--model", "--dataset", "--data-dir", "--device"})
    EXPECT_NE(evaluate.output.find(expected), std::string::npos) << "missing " << expected << " in:\n" << evaluate.output;
  // No image: one line naming the positional as the help and the README do (FILE...).
  const Outcome none = run_mnist("predict --model x.ckpt");
  EXPECT_EQ(none.status, 2) << none.output;
  EXPECT_NE(none.output.find("mnist: error: FILE is required"), std::string::npos) << none.output;
  EXPECT_NE(help.output.find("Usage: mnist predict [OPTIONS] FILE..."), std::string::npos) << help.output;
}

}  // namespace
}  // namespace mnist
