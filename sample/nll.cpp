#include "sample/nll.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "engine/error.h"
#include "model/trainer.h"
#include "sample/report.h"

namespace fs = std::filesystem;

namespace prsr::sample_cli {

NllBits heldout_nll(Model<float>& model, const CheckpointInfo& info, const std::vector<Input>& inputs, int batch,
                    Progress* progress) {
  check(model.config().has_prior(), "heldout_nll: the model has no prior (loss l2)");
  NllBits r;
  if (inputs.empty()) return r;
  batch = int(std::min<size_t>(size_t(batch), inputs.size()));  // buffers no larger than needed
  Trainer<float> trainer(model, info.optim, batch);
  double sum_ab = 0, sum_a = 0;  // batch means (bits) times batch sizes
  std::vector<const uint8_t*> ptrs;
  for (size_t b0 = 0; b0 < inputs.size(); b0 += batch) {
    const int n = int(std::min<size_t>(batch, inputs.size() - b0));
    ptrs.clear();
    for (int j = 0; j < n; ++j) {
      check(inputs[b0 + j].has_y(), "heldout_nll: input " + inputs[b0 + j].name + " has no ground truth");
      ptrs.push_back(inputs[b0 + j].y.data());
    }
    const StepResult s = trainer.evaluate(ptrs.data(), n);  // CE(A + B) and CE(A) in bits per sub-pixel
    sum_ab += s.nll_bits * n;
    sum_a += s.ce_a_bits * n;
    if (progress) {
      progress->begin_batch(n);
      progress->update(1, 1);
    }
  }
  r.images = long(inputs.size());
  r.ab = sum_ab / double(r.images);
  r.a = sum_a / double(r.images);
  return r;
}

int run_nll(const Args& a, Models& models) {
  const ModelConfig& cfg = models.main.info.model;
  if (!cfg.has_prior())
    throw Error("--nll: " + a.ckpt + " is an l2 model (loss " + cfg.loss +
                "): it predicts one image, not a distribution over pixel values, so it has no bits/dim");
  std::string label;
  const std::vector<Input> inputs = read_inputs(a, cfg.colors, cfg.size, label);
  if (inputs.empty()) throw Error("--nll: the " + a.split + " split of " + a.data + " has no images");
  std::printf("nll: %zu image%s in batches of %d, evaluation-mode batch norm, no sampling\n", inputs.size(),
              inputs.size() == 1 ? "" : "s", a.batch);
  Progress progress(long(inputs.size()), "nll");
  const NllBits bits = heldout_nll(*models.main.model, models.main.info, inputs, a.batch, &progress);
  const double secs = progress.seconds(), rate = secs > 0 ? bits.images / secs : 0.0;

  std::printf("\n%-8s %8s %13s %11s %9s %9s\n", "split", "images", "bits/dim A+B", "bits/dim A", "time (s)",
              "images/s");
  std::printf("%-8s %8ld %13.4f %11.4f %9.2f %9.2f\n", a.split.c_str(), bits.images, bits.ab, bits.a, secs, rate);

  const fs::path base(a.out);
  const std::string csv_path = fs::path(base).replace_extension(".csv").string();
  const std::string json_path = fs::path(base).replace_extension(".json").string();
  const std::string csv = "split,images,bits_per_dim_ab,bits_per_dim_a,seconds,images_per_s\n" + a.split + "," +
                          std::to_string(bits.images) + "," + csv_num(bits.ab) + "," + csv_num(bits.a) + "," +
                          csv_num(secs) + "," + csv_num(rate) + "\n";
  const std::string js =
      "{\n  \"checkpoint\": " + json_str(a.ckpt) + ",\n  \"data\": " + json_str(label) +
      ",\n  \"batch\": " + std::to_string(a.batch) + ",\n  \"device\": " + json_str(device_name(models.dev)) +
      ",\n  \"rows\": [\n    {\"split\": " + json_str(a.split) + ", \"images\": " + std::to_string(bits.images) +
      ", \"bits_per_dim_ab\": " + json_num(bits.ab) + ", \"bits_per_dim_a\": " + json_num(bits.a) +
      ", \"seconds\": " + json_num(secs) + ", \"images_per_s\": " + json_num(rate) + "}\n  ]\n}\n";
  std::error_code ec;  // a folder that cannot be made shows up as write_text's error
  if (!base.parent_path().empty()) fs::create_directories(base.parent_path(), ec);
  write_text(csv_path, csv);
  write_text(json_path, js);
  std::printf("wrote %s and %s\n", csv_path.c_str(), json_path.c_str());
  return 0;
}

}  // namespace prsr::sample_cli
