// errors.json (include/mnist/train/misclassified.h): picking the most confident mistakes and writing them.
#include "mnist/train/misclassified.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

namespace mnist {

std::vector<Misclassified> most_confident_errors(const float* logits, const std::uint8_t* labels, int count,
                                                 std::size_t how_many) {
  std::vector<Misclassified> errors;
  for (int i = 0; i < count; ++i) {
    const float* z = logits + std::size_t(i) * kClasses;
    if (!std::all_of(z, z + kClasses, [](float x) { return std::isfinite(x); })) continue;  // a diverged model
    int predicted = 0;
    for (int c = 1; c < kClasses; ++c)
      if (z[c] > z[predicted]) predicted = c;  // strict: the first maximum wins, as accumulate_metrics does
    if (labels[i] >= kClasses || predicted == labels[i]) continue;
    // softmax(z)[predicted] = 1 / (1 + Σ_{c≠predicted} exp(z_c − z_predicted)): z_predicted is the
    // largest logit, so no term overflows. The small terms are summed first, in class order, so
    // rows that differ only in which class is predicted get the same probability.
    double others = 0.0;
    for (int c = 0; c < kClasses; ++c)
      if (c != predicted) others += std::exp(double(z[c]) - double(z[predicted]));
    const double probability = 1.0 / (1.0 + others);
    errors.push_back({i, int(labels[i]), predicted, probability});
  }
  // Index as the tie-break makes the order total, so the selection does not depend on the sort.
  const auto before = [](const Misclassified& a, const Misclassified& b) {
    return a.probability != b.probability ? a.probability > b.probability : a.index < b.index;
  };
  const std::size_t kept = std::min(how_many, errors.size());
  std::partial_sort(errors.begin(), errors.begin() + std::ptrdiff_t(kept), errors.end(), before);
  errors.resize(kept);
  return errors;
}

std::string errors_json(const std::vector<Misclassified>& errors, const ImageSlice& slice, const std::string& dataset) {
  std::string text = "{\"dataset\": " + nlohmann::json(dataset).dump() + ", \"errors\": [";
  for (std::size_t i = 0; i < errors.size(); ++i) {
    const Misclassified& e = errors[i];
    const std::uint8_t* pixels = slice.pixels + std::size_t(e.index) * kPixels;
    // ordered_json: the fields in this order, pixels last.
    const nlohmann::ordered_json entry = {{"index", e.index},
                                          {"true", e.truth},
                                          {"predicted", e.predicted},
                                          {"probability", e.probability},
                                          {"pixels", std::vector<int>(pixels, pixels + kPixels)}};
    text += (i ? ",\n" : "\n") + entry.dump();
  }
  return text + (errors.empty() ? "]}\n" : "\n]}\n");
}

}  // namespace mnist
