// ./build/sample --nll: the held-out negative log-likelihood of a whole split, without sampling
// (docs/sample.md "--nll", docs/metrics.md "Bits/dim"): bits/dim of the full model, A + B, and
// of the conditioning network alone, A, from one evaluation-mode forward pass per image.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/model.h"
#include "sample/inputs.h"
#include "sample/models.h"
#include "sample/options.h"
#include "sample/progress.h"

namespace prsr::sample_cli {

// Bits per sub-pixel (docs/metrics.md "Bits/dim"), over every sub-pixel of every image:
//   ab = mean of -log2 softmax(A + B)[y]   (the model's likelihood: what --eval reports)
//   a  = mean of -log2 softmax(A)[y]       (A's logits alone as the distribution of each sub-pixel)
struct NllBits {
  double ab = NAN, a = NAN;
  long images = 0;
};

// Trainer::evaluate (Model::loss with evaluation-mode batch norm, no gradients) over `inputs`
// (every one with a ground truth) in batches of `batch`; each batch's means are weighted by its
// size, which is the mean over all sub-pixels since every image has C * size * size of them.
// Needs a model with a prior (loss "pixel"). Advances `progress` (may be null) once per batch.
NllBits heldout_nll(Model<float>& model, const CheckpointInfo& info, const std::vector<Input>& inputs, int batch,
                    Progress* progress);

// --nll: an Error for an l2 checkpoint (no distribution, so no likelihood); then the inputs
// (--data, --split, --count: the whole split by default), heldout_nll with a progress bar, the
// table on stdout and <out>.csv / <out>.json (written atomically). Returns the exit code.
int run_nll(const Args& a, Models& models);

}  // namespace prsr::sample_cli
