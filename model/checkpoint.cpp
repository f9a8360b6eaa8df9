#include "model/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace prsr {

namespace {

constexpr char kMagic[8] = {'P', 'R', 'S', 'R', 'C', 'K', 'P', 'T'};
// Version 2 (written): the checksum is standard FNV-1a 64. Version 1 (still read): the same
// layout, but its checksum started from a mistyped offset basis (1469598103934665603, the
// standard 14695981039346656037 with its last digit dropped), so standard FNV-1a readers
// rejected it. docs/checkpoint.md.
constexpr uint32_t kVersion = 2;
constexpr uint32_t kOldestVersion = 1;
// magic(8) version(4) reserved(4) total_length(8) header_length(4)
constexpr size_t kFixed = 8 + 4 + 4 + 8 + 4;

constexpr uint64_t kFnvOffsetBasis = 14695981039346656037ull;
constexpr uint64_t kFnvOffsetBasisV1 = 1469598103934665603ull;

uint64_t fnv1a(const uint8_t* p, size_t n, uint64_t h = kFnvOffsetBasis) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct Writer {
  std::vector<uint8_t> buf;
  template <class X>
  void put(const X& v) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
    buf.insert(buf.end(), p, p + sizeof(X));
  }
  void bytes(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  }
};

struct Reader {
  const std::vector<uint8_t>& buf;
  size_t pos;
  const std::string& path;
  template <class X>
  X get() {
    need(sizeof(X));
    X v;
    std::memcpy(&v, buf.data() + pos, sizeof(X));
    pos += sizeof(X);
    return v;
  }
  void need(size_t n) {
    if (pos + n > buf.size()) throw Error(path + ": corrupt checkpoint (a record runs past the end)");
  }
  const uint8_t* take(size_t n) {
    need(n);
    const uint8_t* p = buf.data() + pos;
    pos += n;
    return p;
  }
};

std::string header_text(const CheckpointInfo& info) {
  std::ostringstream o;
  o << "model " << info.model.to_string() << "\n";
  o << "optimizer " << optim_to_string(info.optim) << "\n";
  o << "step " << info.step << "\n";
  for (auto& [k, v] : info.meta) {
    check(k.find_first_of(" \n") == std::string::npos && v.find('\n') == std::string::npos,
          "checkpoint meta keys have no spaces and values no newlines: " + k);
    o << "meta." << k << " " << v << "\n";
  }
  return o.str();
}

CheckpointInfo parse_header(const std::string& text, const std::string& path) {
  CheckpointInfo info;
  std::istringstream in(text);
  std::string line;
  bool got_model = false, got_optim = false, got_step = false;
  while (std::getline(in, line)) {
    const auto sp = line.find(' ');
    const std::string key = line.substr(0, sp), val = sp == std::string::npos ? "" : line.substr(sp + 1);
    try {
      if (key == "model") {
        info.model = ModelConfig::from_string(val);
        got_model = true;
      } else if (key == "optimizer") {
        info.optim = optim_from_string(val);
        got_optim = true;
      } else if (key == "step") {
        info.step = std::stol(val);
        got_step = true;
      } else if (key.rfind("meta.", 0) == 0) info.meta[key.substr(5)] = val;
      else if (!key.empty()) throw Error("unknown header entry '" + key + "'");
    } catch (const std::exception& e) { throw Error(path + ": corrupt checkpoint header: " + e.what()); }
  }
  check(got_model && got_optim && got_step, path + ": corrupt checkpoint header (missing model/optimizer/step)");
  return info;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open checkpoint: " + std::strerror(errno));
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return buf;
}

// Checks magic, version, length and checksum; returns the header and the reader after it.
CheckpointInfo verify(const std::vector<uint8_t>& buf, const std::string& path, size_t& body) {
  if (buf.size() < 8 || std::memcmp(buf.data(), kMagic, 8) != 0)
    throw Error(path + ": not a prsr checkpoint (wrong magic)");
  if (buf.size() < kFixed) throw Error(path + ": truncated checkpoint (" + std::to_string(buf.size()) + " bytes)");
  Reader r{buf, 8, path};
  const uint32_t version = r.get<uint32_t>();
  if (version < kOldestVersion || version > kVersion)
    throw Error(path + ": checkpoint format version " + std::to_string(version) +
                " is not supported (this build reads versions " + std::to_string(kOldestVersion) + " to " +
                std::to_string(kVersion) + ")");
  r.get<uint32_t>();
  const uint64_t total = r.get<uint64_t>();
  if (buf.size() < total)
    throw Error(path + ": truncated checkpoint (" + std::to_string(buf.size()) + " of " + std::to_string(total) +
                " bytes)");
  if (buf.size() > total)
    throw Error(path + ": corrupt checkpoint (" + std::to_string(buf.size() - total) + " unexpected bytes at the end)");
  uint64_t stored;
  std::memcpy(&stored, buf.data() + total - 8, 8);
  const uint64_t basis = version == 1 ? kFnvOffsetBasisV1 : kFnvOffsetBasis;
  if (fnv1a(buf.data(), total - 8, basis) != stored) throw Error(path + ": corrupt checkpoint (checksum mismatch)");
  const uint32_t hlen = r.get<uint32_t>();
  const uint8_t* h = r.take(hlen);
  body = r.pos;
  return parse_header(std::string(reinterpret_cast<const char*>(h), hlen), path);
}

void write_atomically(const std::string& path, const std::vector<uint8_t>& data, bool fsync_file) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot write checkpoint " + path + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error("cannot write checkpoint " + path + ": " + err);
    }
    off += size_t(n);
  }
  if ((fsync_file && ::fsync(fd) != 0) || ::close(fd) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw Error("cannot write checkpoint " + path + ": " + err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw Error("cannot write checkpoint " + path + ": " + err);
  }
}

}  // namespace

std::string optim_to_string(const OptimConfig& c) {
  std::ostringstream o;
  o.precision(9);
  o << "kind=" << c.kind << " lr=" << c.lr << " decay=" << c.decay << " momentum=" << c.momentum << " eps=" << c.eps
    << " beta1=" << c.beta1 << " beta2=" << c.beta2 << " halve_every=" << c.halve_every;
  return o.str();
}

OptimConfig optim_from_string(const std::string& s) {
  OptimConfig c;
  std::istringstream in(s);
  std::string tok;
  while (in >> tok) {
    const auto eq = tok.find('=');
    check(eq != std::string::npos, "optimizer config: malformed entry '" + tok + "'");
    const std::string k = tok.substr(0, eq), v = tok.substr(eq + 1);
    if (k == "kind") c.kind = v;
    else if (k == "lr") c.lr = std::stof(v);
    else if (k == "decay") c.decay = std::stof(v);
    else if (k == "momentum") c.momentum = std::stof(v);
    else if (k == "eps") c.eps = std::stof(v);
    else if (k == "beta1") c.beta1 = std::stof(v);
    else if (k == "beta2") c.beta2 = std::stof(v);
    else if (k == "halve_every") c.halve_every = std::stol(v);
    else throw Error("optimizer config: unknown key '" + k + "'");
  }
  return c;
}

void save_checkpoint(const std::string& path, const Model<float>& model, const Optimizer<float>* opt,
                     const CheckpointInfo& info_in, bool fsync_file) {
  CheckpointInfo info = info_in;
  info.model = model.config();
  const std::string header = header_text(info);
  Writer w;
  w.bytes(kMagic, 8);
  w.put<uint32_t>(kVersion);
  w.put<uint32_t>(0);
  w.put<uint64_t>(0);  // total length, patched below
  w.put<uint32_t>(uint32_t(header.size()));
  w.bytes(header.data(), header.size());
  const std::vector<float> values = model.params.download();
  const auto& entries = model.params.entries();
  w.put<uint32_t>(uint32_t(entries.size()));
  for (auto& e : entries) {
    w.put<uint16_t>(uint16_t(e.name.size()));
    w.bytes(e.name.data(), e.name.size());
    const Shape& s = e.tensor->shape;
    for (int d : {s.n, s.c, s.h, s.w}) w.put<int32_t>(d);
    w.put<uint64_t>(e.tensor->numel());
    w.bytes(values.data() + e.offset, e.tensor->numel() * sizeof(float));
  }
  if (opt) {
    w.put<uint32_t>(2);
    for (int k = 0; k < 2; ++k) {
      const std::vector<float> st = opt->download_state(k);
      w.put<uint64_t>(st.size());
      w.bytes(st.data(), st.size() * sizeof(float));
    }
  } else {
    w.put<uint32_t>(0);
  }
  const uint64_t total = w.buf.size() + 8;
  std::memcpy(w.buf.data() + 16, &total, 8);
  w.put<uint64_t>(fnv1a(w.buf.data(), w.buf.size()));
  write_atomically(path, w.buf, fsync_file);
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  const std::vector<uint8_t> buf = read_file(path);
  size_t body = 0;
  CheckpointInfo info = verify(buf, path, body);
  Reader r{buf, body, path};
  const uint32_t n = r.get<uint32_t>();
  for (uint32_t i = 0; i < n; ++i) {
    const uint16_t len = r.get<uint16_t>();
    r.take(len + 16);
    r.take(r.get<uint64_t>() * sizeof(float));
  }
  info.has_optimizer_state = r.get<uint32_t>() == 2;
  return info;
}

CheckpointInfo load_checkpoint(const std::string& path, Model<float>& model, Optimizer<float>* opt) {
  const std::vector<uint8_t> buf = read_file(path);
  size_t body = 0;
  CheckpointInfo info = verify(buf, path, body);
  if (info.model.to_string() != model.config().to_string())
    throw Error(path + ": the checkpoint's model (" + info.model.to_string() +
                ") does not match the requested model (" + model.config().to_string() + ")");
  Reader r{buf, body, path};
  std::vector<float> values = model.params.download();
  const auto& entries = model.params.entries();
  const uint32_t n = r.get<uint32_t>();
  check(n == entries.size(),
        path + ": the checkpoint has " + std::to_string(n) + " tensors, the model " + std::to_string(entries.size()));
  for (uint32_t i = 0; i < n; ++i) {
    const uint16_t len = r.get<uint16_t>();
    const std::string name(reinterpret_cast<const char*>(r.take(len)), len);
    const auto& e = entries[i];
    check(name == e.name, path + ": tensor " + std::to_string(i) + " is '" + name + "', expected '" + e.name + "'");
    Shape s;
    s.n = r.get<int32_t>();
    s.c = r.get<int32_t>();
    s.h = r.get<int32_t>();
    s.w = r.get<int32_t>();
    const uint64_t count = r.get<uint64_t>();
    check(s == e.tensor->shape && count == e.tensor->numel(),
          path + ": tensor '" + name + "' has shape " + s.str() + ", the model expects " + e.tensor->shape.str());
    std::memcpy(values.data() + e.offset, r.take(count * sizeof(float)), count * sizeof(float));
  }
  const uint32_t nstate = r.get<uint32_t>();
  check(nstate == 0 || nstate == 2,
        path + ": corrupt checkpoint (optimizer state count " + std::to_string(nstate) + ")");
  info.has_optimizer_state = nstate == 2;
  std::vector<float> states[2];
  if (opt) {
    check(info.has_optimizer_state, path + ": the checkpoint has no optimizer state to resume from");
    check(info.optim.kind == opt->config().kind,
          path + ": the checkpoint was trained with " + info.optim.kind + ", not " + opt->config().kind);
  }
  for (uint32_t k = 0; k < nstate; ++k) {
    const uint64_t count = r.get<uint64_t>();
    check(count == model.params.trainable_count(), path + ": optimizer state size does not match the model");
    states[k].resize(count);
    std::memcpy(states[k].data(), r.take(count * sizeof(float)), count * sizeof(float));
  }
  check(r.pos + 8 == buf.size(), path + ": corrupt checkpoint (unexpected trailing data)");
  // Everything was read and checked: only now touch the model and optimiser.
  model.params.upload(values);
  if (opt)
    for (int k = 0; k < 2; ++k) opt->upload_state(k, states[k]);
  return info;
}

}  // namespace prsr
