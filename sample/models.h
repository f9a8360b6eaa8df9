// ./build/sample's checkpoints: the device, the model (--ckpt) and the optional ResNet-L2
// baseline (--baseline-ckpt), loaded and checked against each other.
#pragma once
#include <memory>

#include "engine/backend.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "sample/options.h"

namespace prsr::sample_cli {

struct Loaded {
  CheckpointInfo info;
  std::unique_ptr<Model<float>> model;  // null when not loaded
};

struct Models {
  Device dev = Device::Cpu;
  Loaded main;      // --ckpt
  Loaded baseline;  // --baseline-ckpt; model null without it
};

// --device (an Error naming the reason when CUDA is not available), then --ckpt and
// --baseline-ckpt (an Error unless it is an l2 model with the main model's colours and size).
// Prints the "model: ..." and "baseline: ..." lines.
Models load_models(const Args& a);

}  // namespace prsr::sample_cli
