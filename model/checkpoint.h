// Checkpoints: one binary file (docs/checkpoint.md), written atomically (temp file, fsync,
// rename), verified on load (magic, version, length, FNV-1a 64 checksum, configuration).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/optim.h"
#include "model/model.h"

namespace prsr {

struct CheckpointInfo {
  ModelConfig model;
  OptimConfig optim;
  long step = 0;
  bool has_optimizer_state = false;
  // Free-form training state (data order, RNG state, data set name...), one line per value.
  std::map<std::string, std::string> meta;
};

// Writes model parameters (+ running statistics), optional optimiser state and `info`, atomically
// (a temporary file renamed over `path`). fsync_file = false leaves out the fsync before the
// rename: the file then survives the process being killed but not a machine crash (for a write
// that must finish within a second, train/step_snapshot.h).
void save_checkpoint(const std::string& path, const Model<float>& model, const Optimizer<float>* opt,
                     const CheckpointInfo& info, bool fsync_file = true);

// Reads only the header (to build a model of the right shape before loading).
CheckpointInfo read_checkpoint_info(const std::string& path);

// Loads into `model` (whose config must match the file's) and, when `opt` is given, the
// optimiser state. Throws Error with one clear line on any problem; `model` is untouched then.
CheckpointInfo load_checkpoint(const std::string& path, Model<float>& model, Optimizer<float>* opt);

std::string optim_to_string(const OptimConfig& c);
OptimConfig optim_from_string(const std::string& s);

}  // namespace prsr
