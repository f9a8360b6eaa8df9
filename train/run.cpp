#include "train/run.h"

#include <omp.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "engine/error.h"
#include "train/console.h"
#include "train/run_folder.h"

namespace fs = std::filesystem;

namespace prsr::train_cli {

void select_device(Run& R) {
  const Options& o = R.o;
  if (o.device == "cuda") {
    if (!prsr::cuda::available())
      throw UsageError(std::string("--device cuda: CUDA is not available (") + prsr::cuda::unavailable_reason() + ")");
    R.dev = prsr::Device::Cuda;
  }
  if (o.threads > 0) omp_set_num_threads(o.threads);
  if (o.precision == "bf16") {
    if (R.dev != prsr::Device::Cpu) throw UsageError("--precision bf16: implemented on --device cpu only");
    if (!prsr::cpu::bf16_supported())
      throw UsageError(std::string("--precision bf16: ") + prsr::cpu::bf16_unsupported_reason());
    prsr::cpu::set_bf16(true);
  }
}

void resolve_run_folder(Run& R) {
  Options& o = R.o;
  try {
    o.model.colors = prsr::data::dataset_colors(o.data);
  } catch (const Error& e) { throw UsageError(std::string("--data: ") + e.what()); }
  if (o.resume && o.model.colors != R.resume_info.model.colors)
    throw Error(o.ckpt + ": the checkpoint's model has " + std::to_string(R.resume_info.model.colors) +
                " colours, the data set " + o.data + " " + std::to_string(o.model.colors));
  try {
    o.model.validate();
  } catch (const Error& e) { throw UsageError(e.what()); }
  R.data_name = data_run_name(o.data);
  // A resumed run keeps writing beside its checkpoint unless --out says otherwise.
  if (o.out.empty() && o.resume) {
    const std::string dir = fs::path(o.ckpt).parent_path().string();
    R.out = dir.empty() ? "." : dir;
  } else {
    R.out = o.out.empty() ? "runs/" + R.data_name : o.out;
  }
  R.ckpt = o.ckpt.empty() ? R.out + "/model.bin" : o.ckpt;
  R.log_path = R.out + "/log.csv";
  {
    std::error_code ec;
    if (!o.resume && !o.overwrite) {
      if (fs::exists(R.ckpt, ec))
        throw Error("checkpoint " + R.ckpt +
                    " already exists; continue it with --resume, or replace it with "
                    "--overwrite, or choose another --ckpt / --out");
      if (fs::exists(R.log_path, ec))
        throw Error(R.log_path +
                    " already exists (an earlier run); continue it with --resume, or replace it "
                    "with --overwrite, or choose another --out");
    }
  }
  // Checked (without creating anything) before the data is read, created after.
  check_writable_dir(R.out, "output folder");
  check_writable_dir(parent_dir(R.ckpt), "checkpoint folder");
}

void load_data(Run& R) {
  const Options& o = R.o;
  prsr::data::DataOptions dopt;
  dopt.spec = o.data;
  dopt.data_dir = o.data_dir;
  dopt.cache_dir = o.cache_dir;
  dopt.lsun_category = o.lsun_category;
  dopt.limit = o.limit;
  dopt.progress = R.ranks == 1 && isatty(fileno(stderr));  // (mpirun gives every rank a pseudo-terminal)
  R.train = prsr::data::load_dataset(dopt, prsr::data::Split::Train);
  R.valid = prsr::data::load_dataset(dopt, prsr::data::Split::Valid);
}

void create_run_folder(const Run& R) {
  ensure_writable_dir(R.out, "output folder");
  ensure_writable_dir(parent_dir(R.ckpt), "checkpoint folder");
}

void print_banner(const Run& R, const prsr::Model<float>& model, double fwd, double train_flops, int threads) {
  const Options& o = R.o;
  std::printf("prsr train\n");
  std::printf("  data       %s (C=%d): %s train / %s valid images%s\n", o.data.c_str(), R.train.colors,
              with_commas(R.train.n).c_str(), with_commas(R.valid.n).c_str(),
              R.train.skipped + R.valid.skipped
                  ? (" (" + std::to_string(R.train.skipped + R.valid.skipped) + " unreadable files skipped)").c_str()
                  : "");
  if (R.train.shared_splits)
    std::printf(
        "  note       fewer than %d images: every image is in every split, so the valid figures are "
        "not held out\n",
        prsr::data::kFolderSplitMin);
  std::printf("  device     %s, %d OpenMP thread%s%s\n", o.device.c_str(), threads, threads == 1 ? "" : "s",
              o.precision == "bf16" ? ", bf16 convolutions (fp32 accumulation and master weights)" : "");
  if (R.data_parallel)
    std::printf("  ranks      %d MPI process%s (data parallel, synchronised batch norm%s): %d images each per step\n",
                R.ranks, R.ranks == 1 ? "" : "es", R.dev == prsr::Device::Cuda ? ", NCCL on one GPU per rank" : "",
                R.local_batch());
  std::printf("  model      %s\n", o.model.to_string().c_str());
  std::printf("  parameters %s\n", with_commas(model.parameter_count()).c_str());
  std::printf("  compute    %.3f GFLOP forward / image, %.3f GFLOP training / image (3x), %.1f GFLOP / step\n",
              fwd / 1e9, train_flops / 1e9, train_flops * o.batch / 1e9);
  if (o.optim.kind == "rmsprop")
    std::printf("  optimiser  rmsprop lr %g decay %g momentum %g eps %g, lr halved every %ld steps\n", o.optim.lr,
                o.optim.decay, o.optim.momentum, o.optim.eps, o.optim.halve_every);
  else
    std::printf("  optimiser  adam lr %g beta1 %g beta2 %g eps %g, lr halved every %ld steps\n", o.optim.lr,
                o.optim.beta1, o.optim.beta2, o.optim.eps, o.optim.halve_every);
  std::printf("  steps      %ld -> %ld, batch %d, seed %" PRIu64 "%s\n", R.start_step, o.steps, o.batch, o.seed,
              o.resume ? " (resumed)" : "");
  std::printf("  run folder %s  (checkpoint %s, log %s)\n", R.out.c_str(), R.ckpt.c_str(), R.log_path.c_str());
  std::fflush(stdout);
}

}  // namespace prsr::train_cli
