#pragma once
// Checkpoints: everything needed to evaluate a trained model or to continue its training
// exactly where it stopped (weights, Adam moments, step, epoch, best validation accuracy and
// the configuration that produced it).
//
// File format, version 1. All integers and floats little-endian; no padding.
//   offset  type         field
//   0       char[8]      magic "MNISTCKP"
//   8       u32          format version (1)
//   12      u32          model kind (ModelKind, model.h: 1 = MLP, 2 = CNN)
//   16      u32          S, the number of sizes: MLP dense layers + 1; CNN 8
//   20      u32[S]       sizes (model.h): MLP 784, hidden..., 10; CNN 1, 28, 28, conv1 filters,
//                        conv2 filters, kernel (odd, at most 31), dense width, 10
//           u32          dtype of the arrays (0 = f32)
//           u64          P, the parameter count (must equal what the kind and sizes imply)
//           f32[P]       parameters, layer by layer, weights then bias: the flat buffer of mlp.h
//                        (W row-major [in, out]) or cnn.h (conv W [C_out, C_in, k, k])
//           f32[P]       Adam first moment m
//           f32[P]       Adam second moment v
//           i64          optimizer steps taken
//           u32          epochs completed
//           f64          best validation accuracy so far (NaN: no validation split)
//           u32          C, then C bytes: the training configuration as JSON (to_json(TrainConfig))
//           u32          CRC-32 (zlib's crc32) of every preceding byte
// Every future version keeps the magic, the version field and the trailing CRC-32, so any
// reader can tell "damaged" from "newer" before it understands the layout.
//
// Reading checks everything before allocating or returning: a file is either a complete,
// intact checkpoint or a CheckpointError "<path>: <what is wrong>" on one line.
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "mnist/core/config.h"
#include "mnist/core/errors.h"
#include "mnist/model/model.h"

namespace mnist {

constexpr std::uint32_t kCheckpointVersion = 1;

struct Checkpoint {
  ModelState state;
  int epoch = 0;                   // epochs completed
  double best_val_accuracy = 0;    // NaN when the run has no validation split
  nlohmann::json config;           // to_json(TrainConfig) of the run that wrote it
};

// The file's bytes (format above).
std::string serialize_checkpoint(const Checkpoint& checkpoint);
// Writes through write_file_atomically: `path` holds either the old or the new checkpoint,
// never a mix. Throws CheckpointError when it cannot be written.
void write_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// Writes checkpoints on a background thread (one per write, never two at once), so that the
// training loop does not wait for the serialization, the CRC, the disk and fsync: the loop
// copies the model state off the trainer (Trainer::copy_state) and hands it over; the thread
// serializes it once and writes those bytes to each of its paths in turn through
// write_file_atomically, stopping at the first that fails. One write is in flight at a time: write() and join() wait for the previous one and throw its
// error, the CheckpointError that write_checkpoint would have thrown, so no failure is lost and
// the files land in the order they were asked for. The destructor joins too.
class CheckpointWriter {
 public:
  CheckpointWriter() = default;
  // Joins. An error no join() reported (the owner is unwinding for another) goes to stderr.
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Joins the previous write (throwing its error instead of starting this one), then starts
  // writing `checkpoint` to `paths`, in that order, and returns.
  void write(Checkpoint checkpoint, std::vector<std::string> paths);
  // Waits for the write in flight, if any, and throws its error, once.
  void join();
  // Joins, then hands back the checkpoint of the last write (or the buffers warm_up made) for
  // the next copy of the state to fill (Trainer::copy_state): its memory is already touched,
  // so the copy costs the loop no page faults. Empty before either.
  Checkpoint recycle();
  // Joins, then allocates and touches the buffers of a model of this kind and these sizes on
  // the background thread, for the first recycle(): while the first epoch trains, not when the
  // loop waits for its first checkpoint.
  void warm_up(ModelKind kind, const std::vector<int>& sizes);

 private:
  std::thread thread_;
  std::exception_ptr error_;  // set by the thread, read after it is joined
  Checkpoint done_;           // likewise: the last checkpoint written, or warm_up's buffers
};

// Throws CheckpointError naming `path` and the problem: missing, not a checkpoint, newer
// format, truncated, checksum mismatch, impossible sizes, unknown model kind or dtype.
Checkpoint read_checkpoint(const std::string& path);
// The same checks on bytes already in memory; `path` only names them in messages.
Checkpoint decode_checkpoint(const std::vector<std::uint8_t>& bytes, const std::string& path);
// The dataset the checkpoint's run trained on, from its stored config: "fashion" or "mnist"
// (also when the config names none, as checkpoints from before --dataset do).
std::string trained_dataset(const Checkpoint& checkpoint);

}  // namespace mnist
