#pragma once
// errors.json: the test images a trained model gets wrong with the most confidence, for the
// gallery the report script draws (host/cli/report.py, errors.png). The file is
//   {"dataset": "mnist", "errors": [{"index", "true", "predicted", "probability", "pixels"}, ...]}
// with `pixels` the image's 784 values (0-255, row-major 28x28) and the errors sorted by
// probability, highest first.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mnist/train/trainer.h"

namespace mnist {

constexpr std::size_t kReportedErrors = 36;  // a 6x6 grid

struct Misclassified {
  int index = 0;             // position in the slice (the test set: its image number)
  int truth = 0;             // the label
  int predicted = 0;         // argmax of the logits, the first maximum on a tie (as evaluate() counts)
  double probability = 0;    // softmax of the logits at `predicted`, computed in double
};

// The misclassified images (predicted != label) with the highest probability, at most
// `how_many`, sorted by probability descending and, on equal probabilities, by index. `logits`
// is row-major [count, 10]. Images with a NaN or infinite logit (a diverged model) and labels
// outside 0..9 are left out.
std::vector<Misclassified> most_confident_errors(const float* logits, const std::uint8_t* labels, int count,
                                                 std::size_t how_many = kReportedErrors);

// The errors.json text for `errors`, picked from `slice` (whose pixels it copies): one error a
// line, so the file stays readable.
std::string errors_json(const std::vector<Misclassified>& errors, const ImageSlice& slice, const std::string& dataset);

}  // namespace mnist
