// The training state a checkpoint of ./build/train carries besides the parameters and the
// optimiser state: its step and the meta entries data, data_dir, seed, batch, train_images,
// epoch, position and elapsed_s. save_run_checkpoint writes them; --resume takes them back
// and refuses flags that contradict them (docs/train.md).
#pragma once
#include "engine/optim.h"
#include "model/model.h"
#include "train/run.h"

namespace prsr::train_cli {

// --resume, before anything else is checked: reads the header of --ckpt (OUT/model.bin when
// not given, OUT from --out or --data) into R.resume_info, refuses flags that contradict it
// (UsageError), and takes the model, optimiser, data set (and its folder unless --data-dir is
// given), seed, batch, step and elapsed time from it.
void read_resume_state(Run& R);

// --resume, once the data is loaded: the data order can only be resumed on as many training
// images as the checkpoint was trained on.
void check_resume_data(const Run& R);

// Saves the parameters, the optimiser state and the meta entries to R.ckpt (atomically) and
// notes the step in R.last_saved_step. Non-finite parameters are never written over a good
// checkpoint: Error instead, naming the checkpoint that is kept. fsync_file: as save_checkpoint.
void save_run_checkpoint(Run& R, const prsr::Model<float>& model, const prsr::Optimizer<float>& opt, long step,
                         double elapsed, bool fsync_file = true);

}  // namespace prsr::train_cli
