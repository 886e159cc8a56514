// `mnist serve` (include/mnist/cli/serve_command.h): cpp-httplib's server, its thread pool
// reading requests, and one BatchedModel running their digits through the checkpoint's model.
#include "mnist/cli/serve_command.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mnist/cli/batched_model.h"
#include "mnist/cli/predict.h"
#include "mnist/cli/train_command.h"
#include "mnist/core/config.h"
#include "mnist/core/errors.h"
#include "mnist/core/mnist.h"
#include "mnist/core/printable.h"
#include "mnist/data/idx.h"
#include "mnist/data/image_io.h"
#include "mnist/io/checkpoint.h"
#include "mnist/model/model.h"
#include "mnist/train/trainer.h"

#ifdef MNIST_HAVE_HTTPLIB
#include <httplib.h>
#endif

namespace mnist {

#ifndef MNIST_HAVE_HTTPLIB

bool serve_available() { return false; }

int run_serve(const ServeOptions&) {
  throw ConfigError("this mnist was built without cpp-httplib, so it cannot serve: apt-get install "
                    "libcpp-httplib-dev (bash .ci/setup does), then build again");
}

#else

namespace {

#include "serve_page.inc"  // kServePage: host/cli/serve_page.html, embedded by CMake

constexpr std::size_t kMaxBodyBytes = std::size_t(4) << 20;
constexpr int kMaxJsonDepth = 8;  // {"pixels": [...]} needs 2; deeper nesting is refused unread

std::string error_body(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void answer_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(error_body(message), "application/json");
}

// A request's failure, as the status and message it is answered with.
struct BadRequest {
  int status;
  std::string message;
};

std::string media_type(const std::string& content_type) {
  std::string type = content_type.substr(0, content_type.find(';'));
  type.erase(0, type.find_first_not_of(" \t"));
  type.erase(type.find_last_not_of(" \t") + 1);
  std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
  return type;
}

bool is_image_type(const std::string& type) {
  return type == "image/png" || type == "image/jpeg" || type == "image/jpg" || type == "image/x-portable-graymap" ||
         type == "image/x-portable-anymap" || type == "image/pgm" || type == "application/octet-stream";
}

// The nesting depth of JSON text, outside its strings: checked before parsing, so that a body of
// a million '[' is refused at once instead of becoming a million nested values.
int json_depth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > kMaxJsonDepth) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// {"pixels": [784 numbers 0..255]}: a 28×28 digit, white on black, row by row.
std::vector<std::uint8_t> pixels_from_json(const std::string& body) {
  if (json_depth(body) > kMaxJsonDepth) throw BadRequest{400, "the JSON is nested too deeply; send {\"pixels\": [784 numbers]}"};
  const nlohmann::json value = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) throw BadRequest{400, "the body is not valid JSON; send {\"pixels\": [784 numbers 0..255]}"};
  if (!value.is_object() || !value.contains("pixels"))
    throw BadRequest{400, "the JSON has no \"pixels\"; send {\"pixels\": [784 numbers 0..255]}"};
  const nlohmann::json& pixels = value["pixels"];
  if (!pixels.is_array() || pixels.size() != std::size_t(kPixels))
    throw BadRequest{400, "\"pixels\" must be an array of 784 numbers (28 rows of 28), got " +
                              (pixels.is_array() ? std::to_string(pixels.size()) + " items" : std::string(pixels.type_name()))};
  std::vector<std::uint8_t> out(kPixels);
  for (int i = 0; i < kPixels; ++i) {
    const nlohmann::json& item = pixels[std::size_t(i)];
    const double v = item.is_number() ? item.get<double>() : NAN;
    if (!(v >= 0 && v <= 255))
      throw BadRequest{400, "\"pixels\"[" + std::to_string(i) + "] must be a number in 0..255, got " +
                                printable(item.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).substr(0, 40))};
    out[std::size_t(i)] = static_cast<std::uint8_t>(std::lround(v));
  }
  return out;
}

Invert invert_parameter(const httplib::Request& req) {
  if (!req.has_param("invert")) return Invert::kAuto;
  const std::string value = req.get_param_value("invert");
  if (value == "auto") return Invert::kAuto;
  if (value == "yes") return Invert::kYes;
  if (value == "no") return Invert::kNo;
  throw BadRequest{400, "invert must be auto, yes or no, got '" + printable(value.substr(0, 40)) + "'"};
}

nlohmann::json model_description(const Checkpoint& checkpoint, const std::string& path, const std::string& device) {
  const ModelState& state = checkpoint.state;
  nlohmann::json out{{"kind", state.kind == ModelKind::kCnn ? "cnn" : "mlp"},
                     {"sizes", state.sizes},
                     {"description", describe_model(state.kind, state.sizes)},
                     {"dataset", trained_dataset(checkpoint)},
                     {"epoch", checkpoint.epoch},
                     {"checkpoint", std::filesystem::path(path).filename().string()},
                     {"device", device},
                     {"test_accuracy", nullptr}};
  // The test accuracy is the run's, from the report.json that `mnist train` wrote beside it.
  std::ifstream report(std::filesystem::path(path).parent_path() / "report.json");
  if (report) {
    const nlohmann::json json = nlohmann::json::parse(report, nullptr, false);
    if (!json.is_discarded() && json.contains("test") && json["test"].is_object() && json["test"].contains("accuracy") &&
        json["test"]["accuracy"].is_number())
      out["test_accuracy"] = json["test"]["accuracy"];
  }
  return out;
}

// Ctrl-C, SIGTERM and SIGHUP: the handler (run by whichever thread the signal lands on, OpenBLAS's
// included) only records it; a watching thread then stops the server, outside the handler. A
// signal that was ignored when mnist started (SIGHUP under nohup) stays ignored, as in training.
std::atomic<int> g_stop_signal{0};
extern "C" void record_stop_signal(int signal) { g_stop_signal = signal; }

class StopSignals {
 public:
  StopSignals() {
    struct sigaction action {};
    action.sa_handler = record_stop_signal;
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < 3; ++i) {
      sigaction(kSignals[i], nullptr, &previous_[i]);
      if (previous_[i].sa_handler != SIG_IGN) sigaction(kSignals[i], &action, nullptr);
    }
  }
  ~StopSignals() {
    stop_watching();
    for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &previous_[i], nullptr);
  }
  // Calls stop() on the thread it starts once a signal has come (polled every 50 ms).
  template <typename Stop>
  void on_signal(Stop stop) {
    watcher_ = std::thread([this, stop] {
      while (!done_) {
        if (g_stop_signal != 0) {
          stop();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  // Ends the watching thread: after this no signal calls the stop function any more.
  void stop_watching() {
    done_ = true;
    if (watcher_.joinable()) watcher_.join();
  }
  int received() const { return g_stop_signal; }

 private:
  static constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction previous_[3] {};
  std::atomic<bool> done_{false};
  std::thread watcher_;
};

thread_local std::chrono::steady_clock::time_point t_request_start;

}  // namespace

bool serve_available() { return true; }

int run_serve(const ServeOptions& options) {
  check_device_option(options.device);
  if (options.port < 0 || options.port > 65535)
    throw ConfigError("--port must be in 0..65535 (0: any free port), got " + std::to_string(options.port));
  const Checkpoint checkpoint = read_checkpoint(options.model);
  const bool on_gpu = choose_device(options.device, "serving");
  std::unique_ptr<Trainer> trainer = trainer_for_predicting(checkpoint, on_gpu);
  const std::string description = describe_model(checkpoint.state.kind, checkpoint.state.sizes);
  const std::string dataset = trained_dataset(checkpoint);
  const nlohmann::json model_info = model_description(checkpoint, options.model, on_gpu ? "gpu" : "cpu");

  StopSignals signals;
  BatchedModel model(std::move(trainer),
                     std::chrono::microseconds(std::llround(std::max(0.0, options.batch_window_ms) * 1000)),
                     options.max_batch);

  httplib::Server server;
  const int threads = std::max(1, options.threads);
  server.new_task_queue = [threads] { return new httplib::ThreadPool(std::size_t(threads)); };
  server.set_payload_max_length(kMaxBodyBytes);
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a second server on a busy
  // port shares it silently instead of failing.
  server.set_socket_options([](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  // Headers and body go out as separate writes: with Nagle's algorithm the body waits for the
  // client's delayed ACK of the headers, some 40 ms on Linux.
  server.set_tcp_nodelay(true);
  const auto seconds = std::chrono::duration<double>(options.timeout);
  server.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(seconds));
  server.set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(seconds));
  server.set_keep_alive_timeout(std::max<time_t>(1, time_t(std::ceil(options.timeout))));
  server.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    t_request_start = std::chrono::steady_clock::now();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_request_start).count();
    std::fprintf(stderr, "%s %s %d %.1f ms\n", printable(req.method).c_str(), printable(req.path.substr(0, 200)).c_str(),
                 res.status, ms);
  });
  // httplib's own refusals (404, 413, a request it cannot read) get a JSON body like ours.
  server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "HTTP status " + std::to_string(res.status);
    if (res.status == 404) message = "no such page: " + printable(req.path.substr(0, 200)) + " (there are /, /predict, /healthz and /model)";
    if (res.status == 413) message = "the body is larger than 4 MiB";
    res.set_content(error_body(message), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      message += std::string(": ") + e.what();
    } catch (...) {
    }
    answer_error(res, 500, message);
  });

  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_content(kServePage, sizeof kServePage - 1, "text/html; charset=utf-8");
  });
  server.Get("/healthz", [&model](const httplib::Request&, httplib::Response& res) {
    const BatchedModel::Counts counts = model.counts();
    res.set_content(nlohmann::json{{"status", "ok"}, {"requests", counts.requests}, {"batches", counts.batches},
                                   {"largest_batch", counts.largest_batch}}.dump(),
                    "application/json");
  });
  server.Get("/model", [&model_info](const httplib::Request&, httplib::Response& res) {
    res.set_content(model_info.dump(), "application/json");
  });
  server.Get("/predict", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Allow", "POST");
    answer_error(res, 405, "POST an image (PNG, JPEG, PGM) or {\"pixels\": [784 numbers]} to /predict");
  });
  server.Post("/predict", [&](const httplib::Request& req, httplib::Response& res) {
    const auto start = std::chrono::steady_clock::now();
    try {
      const std::string type = media_type(req.get_header_value("Content-Type"));
      std::vector<std::uint8_t> pixels;
      if (type == "application/json") {
        pixels = pixels_from_json(req.body);
      } else if (is_image_type(type)) {
        const Invert invert = invert_parameter(req);
        try {
          pixels = decode_digit_image(std::vector<std::uint8_t>(req.body.begin(), req.body.end()), "the image", invert);
        } catch (const ImageError& error) {
          throw BadRequest{400, error.what()};
        }
      } else {
        throw BadRequest{415, (type.empty() ? std::string("no Content-Type") : "Content-Type " + printable(type.substr(0, 80))) +
                                  ": send image/png, image/jpeg, image/x-portable-graymap or application/json"};
      }
      const Reading reading = read_logits(model.logits(pixels).data());
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      nlohmann::json answer{{"digit", reading.digit},
                            {"probabilities", reading.probabilities},
                            {"input", pixels},
                            {"model", description},
                            {"seconds", elapsed}};
      const std::string name = class_name(dataset, reading.digit);  // Fashion-MNIST's classes have names
      if (!name.empty()) answer["class"] = name;
      res.set_content(answer.dump(), "application/json");
    } catch (const BadRequest& bad) {
      answer_error(res, bad.status, bad.message);
    }
  });

  int port = options.port;
  if (port == 0)
    port = server.bind_to_any_port(options.host);  // the system's choice of a free port
  else if (!server.bind_to_port(options.host, port))
    port = -1;
  if (port <= 0) {
    const int error = errno;
    throw ConfigError("cannot listen on " + printable(options.host) + ":" + std::to_string(options.port) +
                      (error ? std::string(" (") + std::strerror(error) + ")" : std::string()) +
                      "; choose another --port, or an address of this machine for --host");
  }
  const std::string host = options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host;
  const std::string accuracy = model_info["test_accuracy"].is_number()
                                   ? ", test accuracy " + std::to_string(model_info["test_accuracy"].get<double>() * 100).substr(0, 5) + "%"
                                   : "";
  std::printf("serving %s (%s%s) on the %s at http://%s:%d/ (Ctrl-C stops)\n", description.c_str(),
              printable(options.model).c_str(), accuracy.c_str(), on_gpu ? "GPU" : "CPU", printable(host).c_str(), port);
  std::fflush(stdout);

  // A signal that arrives before listen_after_bind runs waits for it: stop() before then does nothing.
  std::atomic<bool> listening_over{false};
  signals.on_signal([&server, &listening_over] {
    while (!server.is_running() && !listening_over) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    server.stop();
  });
  server.listen_after_bind();
  listening_over = true;
  signals.stop_watching();  // before the server it stops goes away
  if (signals.received() != 0)
    std::fprintf(stderr, "mnist serve: stopped by %s\n", signals.received() == SIGINT ? "Ctrl-C" : strsignal(signals.received()));
  return 0;
}

#endif

}  // namespace mnist
