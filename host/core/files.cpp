// Files read within their kind's bound (read_file) and written whole or not at all
// (write_file_atomically).
#include "mnist/core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "mnist/core/errors.h"
#include "mnist/core/printable.h"

namespace fs = std::filesystem;

namespace mnist {

template <class Error>
std::vector<std::uint8_t> read_file(const std::string& path, const FileReading& reading) {
  const auto fail = [&](const std::string& what) { throw Error(printable(path) + ": " + what); };
  // Each way a path can fail to be a readable file gets its own message: "cannot open" alone
  // sends people looking in the wrong place.
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) fail(reading.not_found);
  if (ec) fail("cannot stat: " + ec.message());
  if (status.type() == fs::file_type::directory) fail(reading.directory);
  std::int64_t file_size = -1;
  if (status.type() == fs::file_type::regular) {
    const std::uintmax_t size = fs::file_size(path, ec);
    if (!ec) file_size = static_cast<std::int64_t>(size);
  }
  if (reading.before) reading.before(file_size);

  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail(std::string("cannot open for reading: ") + std::strerror(errno));
  std::vector<std::uint8_t> bytes;
  std::uint8_t chunk[1 << 16];
  for (bool first = true;; first = false) {
    const std::size_t n = std::fread(chunk, 1, sizeof chunk, file.get());
    bytes.insert(bytes.end(), chunk, chunk + n);
    if (reading.after_chunk && !reading.after_chunk(bytes, file_size, first)) break;
    if (n < sizeof chunk) break;  // the end, or a read error (below)
  }
  if (std::ferror(file.get())) fail(std::string("read error: ") + std::strerror(errno));
  return bytes;
}

template std::vector<std::uint8_t> read_file<DataError>(const std::string&, const FileReading&);
template std::vector<std::uint8_t> read_file<ImageError>(const std::string&, const FileReading&);
template std::vector<std::uint8_t> read_file<CheckpointError>(const std::string&, const FileReading&);

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
