#pragma once
// `mnist report RUN_DIR`: the pictures and report.md of a run directory (curves.png,
// confusion.png, errors.png), drawn by the plotting script host/cli/report.py.
#include <string>

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

}  // namespace mnist
