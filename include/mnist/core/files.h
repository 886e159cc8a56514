#pragma once
// Files the program writes: whole, or not at all.
#include <string>

namespace mnist {

// Writes `text` to `path` through a temporary file in the same directory, flushed, synced and
// renamed, so a crash never leaves a half-written file in place of a good one. Throws IoError
// naming the file and the reason.
void write_file_atomically(const std::string& path, const std::string& text);

// The temporary file write_file_atomically uses for `path` in this process: named after the
// process, so two processes writing the same path never write into one temporary file.
std::string temporary_path(const std::string& path);

}  // namespace mnist
