#include "mnist/train/run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <sstream>
#include <vector>

#include "mnist/core/files.h"
#include "mnist/data/idx.h"
#include "mnist/train/trainer.h"

namespace fs = std::filesystem;

namespace mnist {

namespace {

std::string timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y%m%d-%H%M%S", &local);
  return text;
}

// JSON has no NaN: metrics that do not exist (no validation split) are written as null.
nlohmann::json number_or_null(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }

}  // namespace

RunDir::RunDir(const std::string& path, bool force, const std::string& metrics_log) {
  if (path.empty()) {
    // A fresh runs/<timestamp>, with a suffix if two runs start in the same second. Each name
    // is claimed by one mkdir, which only one process can win, so runs started side by side
    // (a sweep script) never share a directory.
    const std::string base = "runs/" + timestamp();
    std::error_code ec;  // e.g. runs/ not searchable: one line, not a filesystem_error
    fs::create_directories("runs", ec);
    path_ = base;
    for (int n = 2; !ec && !fs::create_directory(path_, ec) && !ec; ++n) path_ = base + "-" + std::to_string(n);
    if (ec) throw IoError("cannot create run directory " + path_ + ": " + ec.message());
  } else {
    path_ = path;
    std::error_code ec;
    if (fs::exists(path_, ec) && !fs::is_directory(path_, ec))
      throw ConfigError("--out " + path_ + " exists and is not a directory");
    if (fs::is_directory(path_, ec) && !fs::is_empty(path_, ec) && !force) {
      const auto has = [&](const char* name) { return fs::exists(path_ + "/" + name, ec); };
      if (has("metrics.jsonl") || has("last.ckpt") || has("best.ckpt") || has("report.json"))
        throw ConfigError("--out " + path_ + " already holds a run; choose another directory or pass --force");
      throw ConfigError("--out " + path_ + " is not empty (and holds no run); choose an empty or new directory, or "
                        "pass --force to train into it (it deletes only a run's files)");
    }
  }
  std::error_code ec;
  fs::create_directories(path_, ec);
  if (ec) throw IoError("cannot create run directory " + path_ + ": " + ec.message());
  if (access(path_.c_str(), W_OK) != 0)
    throw IoError("run directory " + path_ + " is not writable: " + std::strerror(errno));
  write_file_atomically(path_ + "/metrics.jsonl", metrics_log);
}

void RunDir::discard_previous_run() const {
  for (const char* name : {"last.ckpt", "best.ckpt", "report.json", "errors.json", "report.md", "curves.png",
                           "confusion.png", "errors.png"}) {
    std::error_code ec;
    fs::remove(path_ + "/" + name, ec);
    if (ec) throw IoError("--force: cannot remove the earlier run's " + path_ + "/" + name + ": " + ec.message());
  }
}

void RunDir::append_epoch(const EpochMetrics& metrics) {
  const std::string path = path_ + "/metrics.jsonl";
  const std::string line = epoch_json(metrics).dump() + "\n";
  std::FILE* file = std::fopen(path.c_str(), "ab");
  if (!file) throw IoError("cannot append to " + path + ": " + std::strerror(errno));
  const bool written = std::fwrite(line.data(), 1, line.size(), file) == line.size() && std::fflush(file) == 0;
  const int write_errno = errno;
  const bool closed = std::fclose(file) == 0;
  if (!written || !closed)
    throw IoError("cannot append to " + path + ": " + std::strerror(written ? errno : write_errno));
}

void RunDir::write_report(const nlohmann::json& report) {
  // As in the checkpoint, a path that is not UTF-8 gets U+FFFD rather than ending the run.
  write_file_atomically(path_ + "/report.json",
                        report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}


nlohmann::json epoch_json(const EpochMetrics& m) {
  return {{"epoch", m.epoch},
          {"train_loss", number_or_null(m.train_loss)},
          {"train_accuracy", number_or_null(m.train_accuracy)},
          {"val_loss", number_or_null(m.val_loss)},
          {"val_accuracy", number_or_null(m.val_accuracy)},
          {"lr", m.lr},
          {"seconds", m.seconds}};
}

namespace {

struct ConfusedPair {
  int truth, predicted;
  unsigned long long count;
};

std::vector<ConfusedPair> most_confused_pairs(const EvalTotals& t, std::size_t how_many) {
  std::vector<ConfusedPair> pairs;
  for (int truth = 0; truth < kClasses; ++truth)
    for (int predicted = 0; predicted < kClasses; ++predicted)
      if (truth != predicted && t.confusion[truth * kClasses + predicted] > 0)
        pairs.push_back({truth, predicted, t.confusion[truth * kClasses + predicted]});
  std::stable_sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.count > b.count; });
  if (pairs.size() > how_many) pairs.resize(how_many);
  return pairs;
}

}  // namespace

nlohmann::json build_report(const TrainConfig& config, const TrainResult& result) {
  const EvalTotals& t = result.test;
  nlohmann::json confusion = nlohmann::json::array();
  nlohmann::json per_class = nlohmann::json::array();
  for (int c = 0; c < kClasses; ++c) {
    nlohmann::json row = nlohmann::json::array();
    unsigned long long true_count = 0, predicted_count = 0;
    for (int p = 0; p < kClasses; ++p) {
      row.push_back(t.confusion[c * kClasses + p]);
      true_count += t.confusion[c * kClasses + p];
      predicted_count += t.confusion[p * kClasses + c];
    }
    confusion.push_back(row);
    const double hits = double(t.confusion[c * kClasses + c]);
    per_class.push_back({{"class", c},
                         {"support", true_count},
                         {"precision", number_or_null(predicted_count ? hits / predicted_count : NAN)},
                         {"recall", number_or_null(true_count ? hits / true_count : NAN)}});
    // Fashion-MNIST's classes have names, which report.py puts beside the numbers.
    if (const std::string name = class_name(config.dataset, c); !name.empty()) per_class.back()["name"] = name;
  }
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& p : most_confused_pairs(t, 5))
    pairs.push_back({{"true", p.truth}, {"predicted", p.predicted}, {"count", p.count}});
  nlohmann::json epochs = nlohmann::json::array();
  for (const auto& e : result.epochs) epochs.push_back(epoch_json(e));

  return {{"config", to_json(config)},
          {"device", result.device_name},
          {"epochs", epochs},
          {"test",
           {{"accuracy", t.count ? double(t.correct) / t.count : 0.0},
            {"loss", t.count ? t.loss_sum / t.count : 0.0},
            {"count", t.count},
            {"confusion", confusion},
            {"per_class", per_class},
            {"most_confused", pairs}}},
          {"early_stop", result.stopped_after_epoch > 0
                             ? nlohmann::json{{"patience", config.early_stop},
                                              {"stopped_after_epoch", result.stopped_after_epoch},
                                              {"best_epoch", result.best_epoch}}
                             : nlohmann::json()},
          {"timings",
           {{"train_seconds", result.train_seconds},
            {"cuda_graph", result.cuda_graph},
            {"checkpoint_stall_seconds", result.checkpoint_stall_seconds}}}};
}

std::string format_summary(const TrainResult& result, const std::string& dataset) {
  const EvalTotals& t = result.test;
  const bool named = !class_name(dataset, 0).empty();
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line, "test: accuracy %.4f (%llu/%llu)  loss %.4f\n",
                t.count ? double(t.correct) / t.count : 0.0, t.correct, t.count, t.count ? t.loss_sum / t.count : 0.0);
  out << line << "confusion matrix (rows: true " << (named ? "class" : "digit") << ", columns: predicted)\n      ";
  for (int p = 0; p < kClasses; ++p) out << std::string(5, ' ') << p;
  out << '\n';
  for (int c = 0; c < kClasses; ++c) {
    std::snprintf(line, sizeof line, "  %d | ", c);
    out << line;
    for (int p = 0; p < kClasses; ++p) {
      std::snprintf(line, sizeof line, "%6llu", t.confusion[c * kClasses + p]);
      out << line;
    }
    if (named) out << "  " << class_name(dataset, c);  // the legend of the row and the column
    out << '\n';
  }
  out << "most confused:";
  for (const auto& p : most_confused_pairs(t, 5)) {
    if (named)
      out << "  " << class_name(dataset, p.truth) << "→" << class_name(dataset, p.predicted);
    else
      out << "  " << p.truth << "→" << p.predicted;
    out << " (" << p.count << ")";
  }
  out << '\n';
  return out.str();
}

}  // namespace mnist
