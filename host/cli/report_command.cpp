// `mnist report` (include/mnist/cli/report_command.h): finds python3 and the plotting script and
// runs one on the other, without a shell, so a path with spaces or quotes is passed as it is.
#include "mnist/cli/report_command.h"

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace fs = std::filesystem;

namespace mnist {
namespace {

bool is_regular_file(const std::string& path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

bool is_executable_file(const std::string& path) { return is_regular_file(path) && access(path.c_str(), X_OK) == 0; }

// Debian's python3-matplotlib is installed for /usr/bin/python3, which may not be the python3
// first on PATH (pyenv, venvs): prefer it, else whatever python3 PATH has.
std::string find_python() {
  if (is_executable_file("/usr/bin/python3")) return "/usr/bin/python3";
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "";
  for (std::size_t start = 0; start <= dirs.size();) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = end > start ? dirs.substr(start, end - start) : ".";  // an empty entry is "."
    if (is_executable_file(dir + "/python3")) return dir + "/python3";
    start = end + 1;
  }
  throw std::runtime_error(
      "python3 not found (neither /usr/bin/python3 nor on PATH): the report needs python3 with matplotlib; "
      "install python3-matplotlib (apt-get install python3-matplotlib)");
}

// The copy the build puts next to the binary, else the source tree's (a binary run from the
// build directory before that copy exists, or moved away from it).
std::string find_script() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const std::string beside = ec ? std::string() : (self.parent_path() / "report.py").string();
  if (!beside.empty() && is_regular_file(beside)) return beside;
  const std::string source = std::string(MNIST_SOURCE_DIR) + "/host/cli/report.py";
  if (is_regular_file(source)) return source;
  throw std::runtime_error("the report script is missing (looked for " + (beside.empty() ? "" : beside + " and ") +
                           source + "); rebuild mnist, which copies host/cli/report.py next to it");
}

}  // namespace

int run_report(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec))
    throw std::runtime_error(run_dir + " is not a directory (give a run directory, such as runs/<timestamp>)");
  const std::string python = find_python();
  const std::string script = find_script();

  std::vector<std::string> args{python, script, run_dir};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  // Our buffered output first, so the lines appear in the order they were written.
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t child = 0;
  const int error = posix_spawn(&child, python.c_str(), nullptr, nullptr, argv.data(), environ);
  if (error != 0) throw std::runtime_error("cannot run " + python + ": " + std::strerror(error));
  int status = 0;
  while (waitpid(child, &status, 0) < 0)
    if (errno != EINTR) throw std::runtime_error(std::string("waiting for the report script: ") + std::strerror(errno));
  if (WIFSIGNALED(status))
    throw std::runtime_error("the report script (" + script + ") was killed by signal " +
                             std::to_string(WTERMSIG(status)));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace mnist
