#pragma once
// `mnist predict`: the digit in each image file according to a checkpoint.
#include <string>
#include <vector>

namespace mnist {

// Prints "<file>: <digit> (p=0.987)" per file, p being the softmax probability of that digit;
// for a Fashion-MNIST checkpoint the class follows its label: "<file>: 9 ankle boot (p=0.987)".
// A file that cannot be read is one error line on stderr and the others are still predicted;
// returns the exit status (1 when any file failed). A bad checkpoint throws CheckpointError.
int run_predict(const std::string& model_path, const std::vector<std::string>& files);

}  // namespace mnist
