#include "sample/models.h"

#include <cstdio>
#include <string>

#include "engine/error.h"

namespace prsr::sample_cli {

namespace {

Loaded load_model(const std::string& path, Device dev) {
  Loaded l;
  l.info = read_checkpoint_info(path);
  l.model = std::make_unique<Model<float>>(l.info.model, dev);
  load_checkpoint(path, *l.model, nullptr);
  return l;
}

}  // namespace

Models load_models(const Args& a) {
  Models m;
  if (a.device == "cuda") {
    if (!cuda::available()) throw Error(std::string("--device cuda: ") + cuda::unavailable_reason());
    m.dev = Device::Cuda;
  }
  if (a.precision == "bf16") {
    if (m.dev != Device::Cpu) throw Error("--precision bf16: implemented on --device cpu only");
    if (!cpu::bf16_supported()) throw Error(std::string("--precision bf16: ") + cpu::bf16_unsupported_reason());
    cpu::set_bf16(true);
  }
  m.main = load_model(a.ckpt, m.dev);
  const ModelConfig& cfg = m.main.info.model;
  const int C = cfg.colors, size = cfg.size, low = cfg.low();
  std::printf("model: %s (step %ld, %s, C=%d, %dx%d -> %dx%d, %zu parameters) on %s\n", a.ckpt.c_str(),
              m.main.info.step, cfg.loss.c_str(), C, low, low, size, size, m.main.model->parameter_count(),
              device_name(m.dev));
  if (a.baseline_ckpt.empty()) return m;
  m.baseline = load_model(a.baseline_ckpt, m.dev);
  const ModelConfig& b = m.baseline.info.model;
  if (b.has_prior())
    throw Error(a.baseline_ckpt +
                ": --baseline-ckpt wants a ResNet-L2 model (trained with --loss l2), this one has loss " + b.loss);
  if (b.colors != C || b.size != size)
    throw Error(a.baseline_ckpt + ": baseline is C=" + std::to_string(b.colors) + " " + std::to_string(b.size) + "x" +
                std::to_string(b.size) + ", the model C=" + std::to_string(C) + " " + std::to_string(size) + "x" +
                std::to_string(size));
  std::printf("baseline: %s (step %ld, ResNet-L2)\n", a.baseline_ckpt.c_str(), m.baseline.info.step);
  return m;
}

}  // namespace prsr::sample_cli
