#include "train/resume.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <system_error>
#include <vector>

#include "engine/error.h"
#include "model/checkpoint.h"
#include "train/run_folder.h"

namespace fs = std::filesystem;

namespace prsr::train_cli {

namespace {

// Flags that fix the model or optimiser must agree with the checkpoint on --resume.
void check_resume_flags(const Options& o, const prsr::CheckpointInfo& info, const std::string& path) {
  using M = prsr::ModelConfig;
  using Q = prsr::OptimConfig;
  struct Field {
    const char* flag;
    std::function<std::string(const M&, const Q&)> get;
  };
  const Field fields[] = {
      {"--channels", [](const M& m, const Q&) { return std::to_string(m.prior_channels); }},
      {"--layers", [](const M& m, const Q&) { return std::to_string(m.prior_layers); }},
      {"--kernel", [](const M& m, const Q&) { return std::to_string(m.kernel); }},
      {"--first-kernel", [](const M& m, const Q&) { return std::to_string(m.first_kernel); }},
      {"--head", [](const M& m, const Q&) { return std::to_string(m.head); }},
      {"--cond-channels", [](const M& m, const Q&) { return std::to_string(m.cond_channels); }},
      {"--cond-blocks", [](const M& m, const Q&) { return std::to_string(m.cond_blocks); }},
      {"--no-batch-norm",
       [](const M& m, const Q&) { return std::string(m.batch_norm ? "batch norm" : "no batch norm"); }},
      {"--loss", [](const M& m, const Q&) { return m.loss; }},
      {"--optimizer", [](const M&, const Q& q) { return q.kind; }},
      {"--lr", [](const M&, const Q& q) { return fmt_g(q.lr); }},
      {"--decay", [](const M&, const Q& q) { return fmt_g(q.decay); }},
      {"--momentum", [](const M&, const Q& q) { return fmt_g(q.momentum); }},
      {"--eps", [](const M&, const Q& q) { return fmt_g(q.eps); }},
      {"--beta1", [](const M&, const Q& q) { return fmt_g(q.beta1); }},
      {"--beta2", [](const M&, const Q& q) { return fmt_g(q.beta2); }},
      {"--lr-halve-every", [](const M&, const Q& q) { return std::to_string(q.halve_every); }},
  };
  for (const Field& f : fields) {
    if (!o.given.count(f.flag)) continue;
    const std::string mine = f.get(o.model, o.optim), theirs = f.get(info.model, info.optim);
    if (mine != theirs) {
      if (std::string(f.flag) == "--no-batch-norm")
        throw UsageError("--no-batch-norm contradicts " + path +
                         " (trained with batch norm); "
                         "--resume takes the model from the checkpoint: drop the flag");
      throw UsageError(std::string(f.flag) + " " + mine + " contradicts " + path + " (" + f.flag + " " + theirs +
                       "); --resume takes the model and optimiser from the checkpoint: drop the flag "
                       "or start a new run");
    }
  }
}

// A meta entry the resumed run cannot do without.
std::string meta_get(const prsr::CheckpointInfo& info, const std::string& key, const std::string& path) {
  auto it = info.meta.find(key);
  if (it == info.meta.end())
    throw Error(path + ": the checkpoint has no '" + key + "' entry (not written by ./build/train?); cannot resume");
  return it->second;
}

}  // namespace

void read_resume_state(Run& R) {
  Options& o = R.o;
  prsr::CheckpointInfo& resume_info = R.resume_info;
  if (o.ckpt.empty()) {  // OUT/model.bin, OUT from --out or --data (default runs/fashion-mnist)
    R.out = o.out.empty() ? "runs/" + data_run_name(o.data) : o.out;
    o.ckpt = R.out + "/model.bin";
  }
  std::error_code ec;
  if (!fs::exists(o.ckpt, ec)) throw Error("--resume: no checkpoint at " + o.ckpt);
  resume_info = prsr::read_checkpoint_info(o.ckpt);  // verifies length and checksum
  if (!resume_info.has_optimizer_state) throw Error(o.ckpt + " has no optimiser state; cannot resume training from it");
  check_resume_flags(o, resume_info, o.ckpt);
  const std::string data = meta_get(resume_info, "data", o.ckpt);
  if (o.given.count("--data") && o.data != data)
    throw UsageError("--data " + o.data + " contradicts " + o.ckpt + ", which was trained on " + data +
                     "; resume with --data " + data + " or start a new run");
  o.data = data;
  if (!o.given.count("--data-dir")) {
    auto it = resume_info.meta.find("data_dir");
    if (it != resume_info.meta.end()) o.data_dir = it->second;
  }
  const uint64_t seed = parse_u64("checkpoint seed", meta_get(resume_info, "seed", o.ckpt));
  if (o.given.count("--seed") && o.seed != seed)
    throw UsageError("--seed " + std::to_string(o.seed) + " contradicts " + o.ckpt + " (seed " + std::to_string(seed) +
                     "); the data order depends on it: drop the flag");
  o.seed = seed;
  const int batch = int(parse_long("checkpoint batch", meta_get(resume_info, "batch", o.ckpt), 1, 65536));
  if (o.given.count("--batch") && o.batch != batch)
    throw UsageError("--batch " + std::to_string(o.batch) + " contradicts " + o.ckpt + " (batch " +
                     std::to_string(batch) + "); the data order depends on it: drop the flag");
  o.batch = batch;
  o.model = resume_info.model;
  o.optim = resume_info.optim;
  R.start_step = resume_info.step;
  auto it = resume_info.meta.find("elapsed_s");
  if (it != resume_info.meta.end()) R.elapsed_before = std::atof(it->second.c_str());
}

void check_resume_data(const Run& R) {
  const Options& o = R.o;
  const long n = parse_long("checkpoint train_images", meta_get(R.resume_info, "train_images", o.ckpt), 1, 1L << 40);
  if (n != R.train.n)
    throw Error(o.ckpt + " was trained on " + std::to_string(n) + " " + o.data + " training images, now there are " +
                std::to_string(R.train.n) + ": the data set changed, so the data order cannot be resumed");
}

void save_run_checkpoint(Run& R, const prsr::Model<float>& model, const prsr::Optimizer<float>& opt, long step,
                         double elapsed, bool fsync_file) {
  const Options& o = R.o;
  // Never write non-finite parameters over a good checkpoint.
  const std::vector<float> p = model.params.download();
  for (float v : p)
    if (!std::isfinite(v))
      throw Error("parameters are not finite after step " + std::to_string(step) +
                  "; not saving (the last good "
                  "checkpoint " +
                  R.ckpt + " is kept)");
  prsr::CheckpointInfo info;
  info.model = o.model;
  info.optim = o.optim;
  info.step = step;
  const uint64_t g = uint64_t(step) * uint64_t(o.batch);
  info.meta = {{"data", o.data},
               {"data_dir", o.data_dir},
               {"seed", std::to_string(o.seed)},
               {"batch", std::to_string(o.batch)},
               {"train_images", std::to_string(R.train.n)},
               {"epoch", std::to_string(g / uint64_t(R.train.n))},
               {"position", std::to_string(g % uint64_t(R.train.n))},
               {"elapsed_s", fmt_g(elapsed)}};
  prsr::save_checkpoint(R.ckpt, model, &opt, info, fsync_file);
  R.last_saved_step = step;
}

}  // namespace prsr::train_cli
