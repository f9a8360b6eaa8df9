// Checkpoints: bit-identical round trip, continued training, and every corruption rejected
// with its own message.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "model/checkpoint.h"
#include "model/trainer.h"

using namespace prsr;
namespace fs = std::filesystem;

namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.colors = 3;
  c.size = 8;
  c.cond_channels = 4;
  c.cond_blocks = 1;
  c.prior_channels = 6;
  c.prior_layers = 1;
  c.kernel = 3;
  c.first_kernel = 3;
  c.head = 8;
  return c;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("prsr-ckpt-" + std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<uint8_t> random_images(int n, int S, int C, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(size_t(n) * S * S * C);
  for (auto& x : v) x = uint8_t(rng() % 256);
  return v;
}

std::vector<uint8_t> file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::string load_error(const fs::path& p, Model<float>& m) {
  try {
    load_checkpoint(p.string(), m, nullptr);
  } catch (const Error& e) { return e.what(); }
  return "";
}

}  // namespace

TEST_CASE("checkpoint: round trip is bit-identical and training continues identically") {
  TempDir tmp;
  const ModelConfig cfg = small_config();
  const auto data = random_images(8, cfg.size, cfg.colors, 3);
  auto batch = [&](long step) {
    std::vector<const uint8_t*> p;
    for (int b = 0; b < 2; ++b)
      p.push_back(data.data() + size_t((step * 2 + b) % 8) * cfg.size * cfg.size * cfg.colors);
    return p;
  };
  OptimConfig oc;  // rmsprop, as in the paper
  // Straight: 6 steps.
  Model<float> a(cfg, Device::Cpu);
  a.init(9);
  Trainer<float> ta(a, oc, 2);
  for (long s = 0; s < 6; ++s) ta.step(batch(s).data(), s);
  // 3 steps, save, load into a fresh model + optimiser, 3 more steps.
  Model<float> b(cfg, Device::Cpu);
  b.init(9);
  {
    Trainer<float> tb(b, oc, 2);
    for (long s = 0; s < 3; ++s) tb.step(batch(s).data(), s);
    CheckpointInfo info;
    info.optim = oc;
    info.step = 3;
    info.meta["note"] = "hello world";
    save_checkpoint((tmp.path / "m.bin").string(), b, &tb.optimizer(), info);
  }
  Model<float> c(cfg, Device::Cpu);
  c.init(1234);  // different init: everything must come from the file
  Trainer<float> tc(c, oc, 2);
  CheckpointInfo got = load_checkpoint((tmp.path / "m.bin").string(), c, &tc.optimizer());
  CHECK(got.step == 3);
  CHECK(got.meta["note"] == "hello world");
  CHECK(got.has_optimizer_state);
  CHECK(c.params.download() == b.params.download());  // bit-identical, buffers included
  for (long s = 3; s < 6; ++s) tc.step(batch(s).data(), s);
  CHECK(c.params.download() == a.params.download());
  CHECK(read_checkpoint_info((tmp.path / "m.bin").string()).model.to_string() == cfg.to_string());
  // No temp files left behind.
  int files = 0;
  for (auto& e : fs::directory_iterator(tmp.path)) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);
}

TEST_CASE("checkpoint: truncated, flipped, wrong magic, wrong version, mismatched config are clear errors") {
  TempDir tmp;
  const ModelConfig cfg = small_config();
  Model<float> m(cfg, Device::Cpu);
  m.init(2);
  CheckpointInfo info;
  const fs::path good = tmp.path / "good.bin";
  save_checkpoint(good.string(), m, nullptr, info);
  const auto bytes = file_bytes(good);
  REQUIRE(bytes.size() > 1000);
  Model<float> target(cfg, Device::Cpu);
  target.init(5);
  const auto before = target.params.download();

  auto t = bytes;
  t.resize(bytes.size() / 2);
  write_bytes(tmp.path / "trunc.bin", t);
  CHECK(load_error(tmp.path / "trunc.bin", target).find("truncated checkpoint") != std::string::npos);

  auto f = bytes;
  f[bytes.size() / 2] ^= 0x10;
  write_bytes(tmp.path / "flip.bin", f);
  CHECK(load_error(tmp.path / "flip.bin", target).find("checksum mismatch") != std::string::npos);

  auto g = bytes;
  g[0] = 'X';
  write_bytes(tmp.path / "magic.bin", g);
  CHECK(load_error(tmp.path / "magic.bin", target).find("not a prsr checkpoint") != std::string::npos);

  auto v = bytes;
  v[8] = 7;
  write_bytes(tmp.path / "version.bin", v);
  CHECK(load_error(tmp.path / "version.bin", target)
            .find("version 7 is not supported (this build reads versions 1 to 2)") != std::string::npos);
  v[8] = 0;
  write_bytes(tmp.path / "version0.bin", v);
  CHECK(load_error(tmp.path / "version0.bin", target).find("version 0 is not supported") != std::string::npos);

  write_bytes(tmp.path / "empty.bin", {});
  CHECK(load_error(tmp.path / "empty.bin", target).find("not a prsr checkpoint") != std::string::npos);
  CHECK(load_error(tmp.path / "missing.bin", target).find("cannot open") != std::string::npos);

  ModelConfig other = cfg;
  other.prior_layers = 2;
  Model<float> wrong(other, Device::Cpu);
  CHECK(load_error(good, wrong).find("does not match the requested model") != std::string::npos);
  // A resume needs optimiser state; this file has none.
  Trainer<float> tr(target, OptimConfig{}, 1);
  CHECK_THROWS_WITH_AS(load_checkpoint(good.string(), target, &tr.optimizer()), doctest::Contains("no optimizer state"),
                       Error);
  // Nothing was loaded into the model by any failed attempt.
  CHECK(target.params.download() == before);
  // The good file still loads.
  CHECK(load_error(good, target).empty());
  CHECK(target.params.download() == m.params.download());
}

TEST_CASE("checkpoint: a failed save leaves the previous checkpoint intact") {
  TempDir tmp;
  Model<float> m(small_config(), Device::Cpu);
  m.init(2);
  const fs::path p = tmp.path / "m.bin";
  save_checkpoint(p.string(), m, nullptr, CheckpointInfo{});
  const auto before = file_bytes(p);
  CHECK_THROWS_AS(save_checkpoint((tmp.path / "no-such-dir" / "m.bin").string(), m, nullptr, CheckpointInfo{}), Error);
  CHECK(file_bytes(p) == before);
}

// FNV-1a 64 from its definition (offset basis 14695981039346656037, prime 1099511628211),
// independent of model/checkpoint.cpp: what any standard reader computes.
static uint64_t standard_fnv1a64(const std::vector<uint8_t>& b, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

TEST_CASE("checkpoint: version 2 carries a standard FNV-1a 64 checksum") {
  TempDir tmp;
  Model<float> m(small_config(), Device::Cpu);
  m.init(4);
  const fs::path p = tmp.path / "m.bin";
  save_checkpoint(p.string(), m, nullptr, CheckpointInfo{});
  const auto b = file_bytes(p);
  REQUIRE(b.size() > 16);
  uint32_t version;
  std::memcpy(&version, b.data() + 8, 4);
  CHECK(version == 2);
  uint64_t stored;
  std::memcpy(&stored, b.data() + b.size() - 8, 8);
  CHECK(stored == standard_fnv1a64(b, b.size() - 8));
}

// tests/data/checkpoint_v1.bin was written by train at b031ef3 (format version 1, legacy
// checksum basis): fashion-mnist, --steps 2 --batch 2 --channels 2 --layers 1 --head 4
// --cond-channels 2 --cond-blocks 1, with its Adam state.
TEST_CASE("checkpoint: a version-1 file (legacy checksum) still loads; its checksum is still checked") {
  const std::string v1 = std::string(PRSR_SOURCE_DIR) + "/tests/data/checkpoint_v1.bin";
  const auto bytes = file_bytes(v1);
  REQUIRE(bytes.size() > 1000);
  CHECK(bytes[8] == 1);
  const CheckpointInfo info = read_checkpoint_info(v1);
  CHECK(info.step == 2);
  CHECK(info.model.colors == 1);
  CHECK(info.model.prior_channels == 2);
  CHECK(info.has_optimizer_state);
  Model<float> m(info.model, Device::Cpu);
  m.init(9);
  const auto fresh = m.params.download();
  Optimizer<float> opt(info.optim, m.params);
  CHECK(load_checkpoint(v1, m, &opt).step == 2);
  const auto loaded = m.params.download();
  CHECK(loaded != fresh);
  for (float x : loaded) REQUIRE(std::isfinite(x));

  // Saved again it is version 2, and loads back to the same values.
  TempDir tmp;
  const fs::path v2 = tmp.path / "v2.bin";
  save_checkpoint(v2.string(), m, &opt, info);
  CHECK(file_bytes(v2)[8] == 2);
  Model<float> back(info.model, Device::Cpu);
  Optimizer<float> opt2(info.optim, back.params);
  load_checkpoint(v2.string(), back, &opt2);
  CHECK(back.params.download() == loaded);
  CHECK(opt2.download_state(0) == opt.download_state(0));

  // A flipped byte in a v1 file is still caught, and so is a v1 file relabelled as v2 (the
  // version chooses the checksum's basis).
  auto f = bytes;
  f[bytes.size() / 2] ^= 0x01;
  write_bytes(tmp.path / "flip.bin", f);
  CHECK(load_error(tmp.path / "flip.bin", back).find("checksum mismatch") != std::string::npos);
  auto r = bytes;
  r[8] = 2;
  write_bytes(tmp.path / "relabelled.bin", r);
  CHECK(load_error(tmp.path / "relabelled.bin", back).find("checksum mismatch") != std::string::npos);
}
