#pragma once
// `mnist serve`: a page to draw a digit on and a JSON API, over HTTP (cpp-httplib), answered by
// a checkpoint loaded once and run on the GPU where there is one.
#include <string>

namespace mnist {

struct ServeOptions {
  std::string model;               // the checkpoint
  std::string host = "127.0.0.1";  // only this machine unless asked otherwise
  int port = 8080;                 // 0: any free port (the first line printed names it)
  std::string device = "auto";
  double timeout = 5.0;            // seconds to read a request or write a response
  // How long the first request of a batch waits for others to join it. 0: a batch is the
  // requests that queued while the previous forward pass ran (measured best on a CPU: docs/serve.md).
  double batch_window_ms = 0.0;
  int max_batch = 256;             // images in one forward pass at most
  int threads = 64;                // connections served at once
};

// Serves until SIGINT or SIGTERM, then returns 0. Prints "serving <model> on <device> at
// http://HOST:PORT/" first (stdout), then one line per request on stderr: method, path, status,
// milliseconds. Routes:
//   GET  /         the page (embedded: host/cli/serve_page.html)
//   POST /predict  a PNG, JPEG or PGM body (prepared as `mnist predict` prepares files), or
//                  application/json {"pixels": [784 numbers 0..255]} (a 28×28 MNIST digit, white
//                  on black, used as it is) → {"digit", "probabilities", "input", "model", "seconds"}, and
//                  "class" for a model of a dataset whose classes have names (Fashion-MNIST)
//   GET  /healthz  {"status": "ok", "requests", "batches", "largest_batch"}
//   GET  /model    the checkpoint: kind, sizes, description, dataset, epoch, test accuracy (from
//                  the report.json beside it, else null)
// A body over 4 MiB is 413; a body that is not a digit is 400, a content type other than those
// above 415, with {"error": "..."}. Throws ConfigError for bad options or an address it cannot
// listen on, CheckpointError for a bad checkpoint.
int run_serve(const ServeOptions& options);

// Whether this build has `mnist serve` (cpp-httplib was found when it was configured).
bool serve_available();

}  // namespace mnist
