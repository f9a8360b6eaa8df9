#include "sample/report.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "engine/error.h"
#include "eval/bicubic.h"
#include "sample/nll.h"

namespace fs = std::filesystem;

namespace prsr::sample_cli {

void add_metrics(EvalRow& row, const Input& in, const uint8_t* y_hat, int size, int C) {
  const int low = size / 4;
  row.m.add(eval::psnr_capped(y_hat, in.y.data(), size, size, C), eval::ssim(y_hat, in.y.data(), size, size, C),
            eval::consistency(in.x.data(), low, low, y_hat, C));
  ++row.outputs;
}

std::string csv_num(double v) {
  if (!std::isfinite(v)) return "";
  char s[64];
  std::snprintf(s, sizeof s, "%.9g", v);
  return s;
}

std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  return csv_num(v);
}

std::string json_str(const std::string& s) {
  std::string r = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') r += '\\';
    if ((unsigned char)ch < 0x20) {
      char e[8];
      std::snprintf(e, sizeof e, "\\u%04x", ch);
      r += e;
      continue;
    }
    r += ch;
  }
  return r + "\"";
}

// Writes text atomically (temp file + rename), like the PNGs and checkpoints.
void write_text(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot write " + path + ": " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": " + std::strerror(errno));
  }
}

void report_eval(const std::vector<EvalRow>& rows, const std::string& label, int S, uint64_t seed,
                 const std::string& ckpt, const std::string& out) {
  std::printf("\n%-10s %6s %9s %8s %7s %12s %8s\n", "method", "T", "bits/dim", "PSNR", "SSIM", "consistency",
              "outputs");
  // "-" where a value does not apply (NaN: no bits/dim, or no outputs to measure).
  auto cell = [](const char* fmt, double v) {
    char s[32] = "-";
    if (std::isfinite(v)) std::snprintf(s, sizeof s, fmt, v);
    return std::string(s);
  };
  for (const EvalRow& r : rows) {
    std::printf("%-10s %6s %9s %8s %7s %12s %8ld\n", r.method.c_str(),
                r.temperature.empty() ? "-" : r.temperature.c_str(), cell("%.4f", r.bits).c_str(),
                cell("%.3f", r.m.mean_psnr()).c_str(), cell("%.4f", r.m.mean_ssim()).c_str(),
                cell("%.4e", r.m.mean_consistency()).c_str(), r.outputs);
  }
  const fs::path base(out);
  const std::string csv_path = fs::path(base).replace_extension(".csv").string();
  const std::string json_path = fs::path(base).replace_extension(".json").string();
  std::string csv = "method,temperature,bits_per_dim,psnr,ssim,consistency,outputs\n";
  for (const EvalRow& r : rows)
    csv += r.method + "," + r.temperature + "," + csv_num(r.bits) + "," + csv_num(r.m.mean_psnr()) + "," +
           csv_num(r.m.mean_ssim()) + "," + csv_num(r.m.mean_consistency()) + "," + std::to_string(r.outputs) + "\n";
  std::string js = "{\n  \"checkpoint\": " + json_str(ckpt) + ",\n  \"data\": " + json_str(label) +
                   ",\n  \"samples_per_input\": " + std::to_string(S) + ",\n  \"seed\": " + std::to_string(seed) +
                   ",\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const EvalRow& r = rows[i];
    js += "    {\"method\": " + json_str(r.method) +
          ", \"temperature\": " + (r.temperature.empty() ? std::string("null") : r.temperature) +
          ", \"bits_per_dim\": " + json_num(r.bits) + ", \"psnr\": " + json_num(r.m.mean_psnr()) +
          ", \"ssim\": " + json_num(r.m.mean_ssim()) + ", \"consistency\": " + json_num(r.m.mean_consistency()) +
          ", \"outputs\": " + std::to_string(r.outputs) + "}" + (i + 1 < rows.size() ? "," : "") + "\n";
  }
  js += "  ]\n}\n";
  write_text(csv_path, csv);
  write_text(json_path, js);
  std::printf("wrote %s and %s\n", csv_path.c_str(), json_path.c_str());
}

void evaluate(const Args& a, Models& models, const std::vector<Input>& inputs, const std::string& label,
              const Plan& plan, const Samples& s) {
  const ModelConfig& cfg = models.main.info.model;
  const int C = cfg.colors, size = cfg.size, low = cfg.low(), S = plan.S;
  std::vector<EvalRow> rows;
  NllBits bits;  // NaN for an l2 model: it has no likelihood
  if (cfg.has_prior()) bits = heldout_nll(*models.main.model, models.main.info, inputs, a.batch, nullptr);
  for (size_t t = 0; t < plan.temps.size(); ++t) {
    EvalRow r;
    r.method = "model";
    if (cfg.has_prior() && plan.opt.mode == DecodeMode::Sample) r.temperature = fmt_temperature(plan.temps[t]);
    if (plan.opt.mode != DecodeMode::Sample) r.method += "-" + a.mode;
    if (!cfg.has_prior()) r.method = "model-l2";
    r.bits = bits.ab;
    for (size_t i = 0; i < inputs.size(); ++i)
      for (int k = 0; k < S; ++k) add_metrics(r, inputs[i], s.model[t][i * S + k].data(), size, C);
    rows.push_back(r);
  }
  if (cfg.has_prior()) {  // the conditioning network alone: softmax(A) per sub-pixel; bits only
    EvalRow r;
    r.method = "model-A";
    r.bits = bits.a;
    rows.push_back(r);
  }
  {
    EvalRow r;
    r.method = "bicubic";
    std::vector<uint8_t> up(size_t(size) * size * C);
    for (const Input& in : inputs) {
      eval::bicubic_upsample(in.x.data(), low, low, C, 4, up.data());
      add_metrics(r, in, up.data(), size, C);
    }
    rows.push_back(r);
  }
  if (models.baseline.model) {
    EvalRow r;
    r.method = "resnet-l2";
    for (size_t i = 0; i < inputs.size(); ++i) add_metrics(r, inputs[i], s.l2[i].data(), size, C);
    rows.push_back(r);
  }
  std::printf("eval: %s, %d sample%s per input, seed %llu\n", label.c_str(), S, S == 1 ? "" : "s",
              (unsigned long long)a.seed);
  report_eval(rows, label, S, a.seed, a.ckpt, a.out);
}

}  // namespace prsr::sample_cli
