#pragma once
// The commands that are Python scripts run by python3: `mnist report RUN_DIR` (the pictures and
// report.md of a run directory, drawn by host/cli/report.py with matplotlib) and `mnist tune`
// (a hyperparameter search on Optuna, host/cli/tune.py, each trial an `mnist train` process).
#include <string>
#include <vector>

namespace mnist {

// Runs the report script on `run_dir` with /usr/bin/python3 (else the python3 on PATH), its
// output passed through, and returns the script's exit status. The script is the copy next to
// the mnist binary (the build puts it there), else the one in the source tree. Throws
// std::runtime_error with one line when `run_dir` is not a directory, python3 or the script
// cannot be found, or the script dies of a signal.
int run_report(const std::string& run_dir);

// The script's exit status when it drew the report but could not print its path (stdout on a
// full disk, or closed): the script says so on stderr, and `mnist train` and `mnist report` exit 1.
constexpr int kReportDrawnButNotPrinted = 3;

// Replaces this process with the tune script (found as the report script is) and `args`, with
// this binary's path in $MNIST_BINARY so its trials run this same mnist. Replacing rather than
// spawning lets Ctrl-C and SIGTERM reach the script, and its exit status be the command's.
// Returns only by throwing std::runtime_error, with one line, when it cannot run the script.
[[noreturn]] void exec_tune(const std::vector<std::string>& args);

}  // namespace mnist
