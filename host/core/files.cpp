// Files written whole or not at all (write_file_atomically).
#include "mnist/core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "mnist/core/errors.h"

namespace fs = std::filesystem;

namespace mnist {

std::string temporary_path(const std::string& path) { return path + ".tmp." + std::to_string(getpid()); }

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string temporary = temporary_path(path);
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  if (!file) throw IoError("cannot write " + temporary + ": " + std::strerror(errno));
  const bool written = std::fwrite(text.data(), 1, text.size(), file) == text.size() && std::fflush(file) == 0 &&
                       fsync(fileno(file)) == 0;
  const bool closed = std::fclose(file) == 0;
  if (!written || !closed || std::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temporary.c_str());
    throw IoError("cannot write " + path + ": " + reason);
  }
  // The rename itself reaches the disk with the directory. Best effort: not every file system
  // syncs a directory, and the file is already in place.
  const std::string parent = fs::path(path).parent_path().string();
  const int directory = open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory >= 0) {
    fsync(directory);
    close(directory);
  }
}

}  // namespace mnist
