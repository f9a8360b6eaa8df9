#include "model/config.h"

#include <map>
#include <sstream>

#include "engine/error.h"

namespace prsr {

std::string ModelConfig::to_string() const {
  std::ostringstream o;
  o << "colors=" << colors << " size=" << size << " cond_channels=" << cond_channels << " cond_blocks=" << cond_blocks
    << " batch_norm=" << (batch_norm ? 1 : 0) << " prior_channels=" << prior_channels
    << " prior_layers=" << prior_layers << " kernel=" << kernel << " first_kernel=" << first_kernel << " head=" << head
    << " loss=" << loss;
  return o.str();
}

ModelConfig ModelConfig::from_string(const std::string& s) {
  std::map<std::string, std::string> kv;
  std::istringstream in(s);
  std::string tok;
  while (in >> tok) {
    const auto eq = tok.find('=');
    check(eq != std::string::npos, "model config: malformed entry '" + tok + "'");
    kv[tok.substr(0, eq)] = tok.substr(eq + 1);
  }
  ModelConfig c;
  auto take_int = [&](const char* key, int& dst) {
    auto it = kv.find(key);
    check(it != kv.end(), std::string("model config: missing '") + key + "'");
    try {
      size_t used = 0;
      dst = std::stoi(it->second, &used);
      check(used == it->second.size(), "");
    } catch (...) { throw Error(std::string("model config: '") + key + "' is not an integer: " + it->second); }
    kv.erase(it);
  };
  int bn = 1;
  take_int("colors", c.colors);
  take_int("size", c.size);
  take_int("cond_channels", c.cond_channels);
  take_int("cond_blocks", c.cond_blocks);
  take_int("batch_norm", bn);
  take_int("prior_channels", c.prior_channels);
  take_int("prior_layers", c.prior_layers);
  take_int("kernel", c.kernel);
  take_int("first_kernel", c.first_kernel);
  take_int("head", c.head);
  c.batch_norm = bn != 0;
  auto it = kv.find("loss");
  check(it != kv.end(), "model config: missing 'loss'");
  c.loss = it->second;
  kv.erase(it);
  check(kv.empty(), "model config: unknown key '" + (kv.empty() ? "" : kv.begin()->first) + "'");
  c.validate();
  return c;
}

void ModelConfig::validate() const {
  check(colors == 1 || colors == 3, "model: colors must be 1 or 3, got " + std::to_string(colors));
  check(size >= 8 && size % 4 == 0, "model: size must be a multiple of 4 and >= 8, got " + std::to_string(size));
  check(cond_channels >= 1, "model: --cond-channels must be >= 1");
  check(cond_blocks >= 0, "model: --cond-blocks must be >= 0");
  check(prior_channels >= colors, "model: --channels must be >= colors");
  check(prior_layers >= 0, "model: --layers must be >= 0");
  check(kernel >= 3 && kernel % 2 == 1, "model: --kernel must be odd and >= 3, got " + std::to_string(kernel));
  check(first_kernel >= 3 && first_kernel % 2 == 1,
        "model: --first-kernel must be odd and >= 3, got " + std::to_string(first_kernel));
  check(head >= colors, "model: --head must be >= colors");
  check(loss == "pixel" || loss == "l2", "model: --loss must be 'pixel' or 'l2', got '" + loss + "'");
}

}  // namespace prsr
