// `mnist report` and `mnist tune` (include/mnist/cli/script_commands.h): find python3 and the
// script and run one on the other, without a shell, so a path with spaces or quotes is passed as
// it is.
#include "mnist/cli/script_commands.h"

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
std::string find_python(const std::string& needs) {
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
      "python3 not found (neither /usr/bin/python3 nor on PATH): " + needs);
}

// The copy the build puts next to the binary, else the source tree's (a binary run from the
// build directory before that copy exists, or moved away from it).
std::string find_script(const std::string& name) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const std::string beside = ec ? std::string() : (self.parent_path() / name).string();
  if (!beside.empty() && is_regular_file(beside)) return beside;
  const std::string source = std::string(MNIST_SOURCE_DIR) + "/host/cli/" + name;
  if (is_regular_file(source)) return source;
  throw std::runtime_error("the script " + name + " is missing (looked for " + (beside.empty() ? "" : beside + " and ") +
                           source + "); rebuild mnist, which copies host/cli/" + name + " next to it");
}

}  // namespace

int run_report(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec))
    throw std::runtime_error(run_dir + " is not a directory (give a run directory, such as runs/<timestamp>)");
  const std::string python =
      find_python("the report needs python3 with matplotlib; install python3-matplotlib (apt-get install python3-matplotlib)");
  const std::string script = find_script("report.py");

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

void exec_tune(const std::vector<std::string>& args) {
  const std::string python = find_python(
      "mnist tune needs python3 with Optuna; install python3-optuna (apt-get install python3-optuna python3-sklearn)");
  const std::string script = find_script("tune.py");
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find this program's own path (/proc/self/exe): " + ec.message());
  if (setenv("MNIST_BINARY", self.c_str(), 1) != 0)
    throw std::runtime_error(std::string("cannot set MNIST_BINARY: ") + std::strerror(errno));
  std::vector<std::string> command{python, script};
  command.insert(command.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : command) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  execv(python.c_str(), argv.data());
  throw std::runtime_error("cannot run " + python + ": " + std::strerror(errno));
}

}  // namespace mnist
