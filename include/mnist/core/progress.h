#pragma once
// A one-line progress bar on stderr for long epochs: done/total, images/s and time left.
// Drawn only when stderr is a terminal, so logs and CI output stay clean.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace mnist {

class ProgressBar {
 public:
  ProgressBar(std::string label, long total)
      : label_(std::move(label)), total_(total), enabled_(isatty(STDERR_FILENO) != 0),
        start_(std::chrono::steady_clock::now()), last_draw_(start_) {}
  ~ProgressBar() { finish(); }

  void update(long done) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;  // redraw at most 10×/s
    last_draw_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? done / seconds : 0.0;
    const double left = rate > 0 ? (total_ - done) / rate : 0.0;
    constexpr int kWidth = 30;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
    std::string bar(filled, '=');
    bar.resize(kWidth, ' ');
    std::fprintf(stderr, "\r%s [%s] %ld/%ld  %.0f img/s  %.0fs left ", label_.c_str(), bar.c_str(), done, total_,
                 rate, left);
    std::fflush(stderr);
    drawn_ = true;
  }

  void finish() {
    if (drawn_) std::fprintf(stderr, "\r\033[K");  // erase the bar; the epoch line replaces it
    drawn_ = false;
  }

 private:
  std::string label_;
  long total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace mnist
