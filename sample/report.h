// ./build/sample --eval: one row of figures per method (the model at each temperature, bicubic,
// the ResNet-L2 baseline), a table on stdout and the same as CSV and JSON beside --out.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "eval/metrics.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "sample/inputs.h"
#include "sample/models.h"
#include "sample/options.h"
#include "sample/sampling.h"

namespace prsr::sample_cli {

struct EvalRow {
  std::string method;       // "model", "bicubic", "resnet-l2"
  std::string temperature;  // "" when it does not apply
  double bits = NAN;        // NaN when it does not apply
  eval::MetricSums m;
  long outputs = 0;
};

// --eval (every input has a ground truth: it comes from --data): the model's rows (one per
// temperature, or model-mean / model-argmax / model-l2), bicubic and, when loaded, resnet-l2;
// then the "eval: ..." line and report_eval.
void evaluate(const Args& a, Models& models, const std::vector<Input>& inputs, const std::string& label,
              const Plan& plan, const Samples& s);

// PSNR, SSIM and consistency of one output y_hat (size x size x C) against in.y and in.x.
void add_metrics(EvalRow& row, const Input& in, const uint8_t* y_hat, int size, int C);
// The writers --eval and --nll share: CSV numbers (9 significant digits, "" when not finite),
// JSON numbers ("null" when not finite), JSON strings, and a text file written atomically (temp
// file + rename), an Error naming the path otherwise.
std::string csv_num(double v);
std::string json_num(double v);
std::string json_str(const std::string& s);
void write_text(const std::string& path, const std::string& text);
// The table on stdout; <out>.csv and <out>.json (written atomically), then a line naming them.
void report_eval(const std::vector<EvalRow>& rows, const std::string& label, int S, uint64_t seed,
                 const std::string& ckpt, const std::string& out);

}  // namespace prsr::sample_cli
