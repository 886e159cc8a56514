#pragma once
// Files: those the program reads, each kind with its own bound, and those it writes, whole or
// not at all.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mnist {

// How read_file reads one kind of file (a dataset file, a checkpoint, an image) and refuses what
// is not one, before it fills the memory.
struct FileReading {
  std::string not_found;  // "file not found"
  std::string directory;  // "is a directory, not an image"
  // Before reading, with the size of a regular file (-1 for anything else): throws (through
  // the kind's error) for a file too large for its kind. Optional.
  std::function<void(std::int64_t file_size)> before;
  // After each chunk of 64 KiB, with every byte read so far and `first` for the first chunk:
  // throws for a file too large for its kind, or returns false to read no further (the bytes
  // read already tell the parser the file is not of its kind). Optional.
  std::function<bool(const std::vector<std::uint8_t>& so_far, std::int64_t file_size, bool first)> after_chunk;
};

// The bytes of the file at `path`, read to its end (a pipe or a device too, not trusting any
// size). Every refusal is an Error (DataError, ImageError or CheckpointError) "<path>: <what>":
// not found, a directory, cannot be opened or read, or what `reading` refuses.
template <class Error>
std::vector<std::uint8_t> read_file(const std::string& path, const FileReading& reading);

// Writes `text` to `path` through a temporary file in the same directory, flushed, synced and
// renamed, so a crash never leaves a half-written file in place of a good one. Throws IoError
// naming the file and the reason.
void write_file_atomically(const std::string& path, const std::string& text);

// The temporary file write_file_atomically uses for `path` in this process: named after the
// process, so two processes writing the same path never write into one temporary file.
std::string temporary_path(const std::string& path);

}  // namespace mnist
