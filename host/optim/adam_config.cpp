// The optimizer a run's options ask for, its learning-rate schedule laid over the run's steps.
#include "mnist/optim/adam_config.h"

#include <algorithm>
#include <cmath>

namespace mnist {

AdamConfig adam_config(const TrainConfig& c, int steps_per_epoch) {
  AdamConfig adam{c.lr, 0.9f, 0.999f, 1e-8f, c.weight_decay, c.adamw};
  LrSchedule& s = adam.schedule;
  s.kind = c.lr_schedule == "cosine"     ? LrSchedule::kCosine
           : c.lr_schedule == "onecycle" ? LrSchedule::kOneCycle
           : c.lr_schedule == "step"     ? LrSchedule::kStep
                                         : LrSchedule::kConstant;
  s.base = c.lr;
  s.min = c.min_lr;
  const std::int64_t steps = std::max(steps_per_epoch, 1);
  s.total_steps = std::int64_t(c.epochs) * steps;
  s.warmup_steps = std::llround(double(c.warmup_epochs) * double(steps));
  if (s.kind == LrSchedule::kOneCycle && c.warmup_epochs == 0.f) s.warmup_steps = std::llround(0.3 * s.total_steps);
  s.warmup_steps = std::min(s.warmup_steps, s.total_steps);
  s.step_steps = std::int64_t(c.lr_step) * steps;
  s.decay = c.lr_decay;
  return adam;
}

}  // namespace mnist
