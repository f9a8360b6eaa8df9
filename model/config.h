// Every size of the model (docs/design.md 1), with the design's defaults.
#pragma once
#include <string>

namespace prsr {

struct ModelConfig {
  int colors = 3;  // C: 3 (RGB) or 1 (grey)
  int size = 32;   // high-res side; the low-res input is size / 4
  // Conditioning network A(x) (docs/design.md 1.1)
  int cond_channels = 32;
  int cond_blocks = 6;  // ResNet blocks at each of 8x8, 16x16, 32x32
  bool batch_norm = true;
  // Prior network B(y) (docs/design.md 1.2)
  int prior_channels = 32;
  int prior_layers = 20;
  int kernel = 5;        // gated layers
  int first_kernel = 7;  // first layer
  int head = 1024;       // 1x1 head width
  // "pixel": CE(A+B) + CE(A), the paper's loss. "l2": the conditioning network alone with a
  // 1x1 regression head (c -> C) trained with MSE on v/127.5-1 (the ResNet-L2 baseline).
  std::string loss = "pixel";

  int low() const { return size / 4; }
  bool has_prior() const { return loss == "pixel"; }
  // Human/checkpoint form: "colors=3 size=32 cond_channels=32 ..." (one key=value per field).
  std::string to_string() const;
  static ModelConfig from_string(const std::string& s);  // throws Error on unknown/missing keys
  void validate() const;                                 // throws Error with the bad field
};

}  // namespace prsr
