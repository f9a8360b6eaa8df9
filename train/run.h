// ./build/train's setup: the Run (the flags as they end up, the paths, the data, where training
// starts) and the steps that fill it. train_main calls them in this order:
//   select_device -> read_resume_state (train/resume.h, --resume only) -> resolve_run_folder
//   -> load_data -> check_resume_data (--resume only) -> create_run_folder
// Every check that needs no data is made before any is read, and nothing is created before the
// data has been read, so a mistake costs no time and leaves nothing behind.
#pragma once
#include <string>

#include "data/dataset.h"
#include "engine/backend.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "train/options.h"

namespace prsr::train_cli {

struct Run {
  Options o;                        // with --resume: model, optimiser, data set, seed and batch from the checkpoint
  std::string data_name;            // the data set's folder name under runs/ (data_run_name)
  std::string out, ckpt, log_path;  // OUT, the checkpoint file, OUT/log.csv
  prsr::Device dev = prsr::Device::Cpu;
  prsr::CheckpointInfo resume_info;  // --resume: the checkpoint's header; default otherwise
  prsr::data::Dataset train, valid;
  long start_step = 0;
  double elapsed_before = 0;  // seconds trained before this session (from the checkpoint)
  long last_saved_step = -1;
  // Data parallel (train/distributed.h): this process is rank `rank` of `ranks`; it trains on
  // images [rank * local_batch(), (rank + 1) * local_batch()) of every global batch of o.batch.
  // Only rank 0 prints, evaluates, samples and writes the run folder.
  int rank = 0, ranks = 1;
  // Gradients and batch-norm statistics go through train/distributed.h: several ranks, or one GPU
  // rank under a launcher (mpirun -np 1 --device cuda runs the NCCL path on one GPU).
  bool data_parallel = false;
  int local_batch() const { return o.batch / ranks; }
  bool leader() const { return rank == 0; }
};

// --device (UsageError when CUDA is not available) and --threads.
void select_device(Run& R);

// The model's colours from the data set name and the model checked (UsageError); OUT, the
// checkpoint and log paths; an earlier run's checkpoint or log is not overwritten without
// --overwrite (or continued without --resume); both folders proved writable, none created.
void resolve_run_folder(Run& R);

// The train and valid splits (from the cache when valid; a progress bar on stderr when it is a
// terminal).
void load_data(Run& R);

// Creates OUT and the checkpoint's folder (checked, not created, by resolve_run_folder).
void create_run_folder(const Run& R);

// The header on stdout: data, device, model, parameters, compute per image and per step,
// optimiser, steps, run folder. `fwd` is the forward FLOPs per image, `train_flops` 3x that.
void print_banner(const Run& R, const prsr::Model<float>& model, double fwd, double train_flops, int threads);

}  // namespace prsr::train_cli
