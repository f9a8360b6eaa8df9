// Convolutions and transposed convolutions of prsr::cpu through oneDNN primitives.
//
// Caching. A primitive (with its descriptor, memory objects, private buffers, reorders and
// scratchpad) is built the first time a (direction, geometry) is seen and kept in a map; later
// calls only point the cached user memory objects at the caller's buffers (set_data_handle) and
// execute. Nothing large is allocated once a shape has been seen.
//
// Layouts. User tensors are plain NCHW (activations) and OIHW (weights). A primitive either works
// on them directly (plain) or picks its own, blocked layouts (format_tag::any) with reorders at
// the boundaries. Which one is a measured rule per direction and shape: see use_blocked().
//
// Accumulation. oneDNN overwrites its outputs while backward kernels must accumulate, so every
// gradient is computed into a private buffer of the cache entry and added to the caller's buffer
// by a reorder whose attribute carries a `sum` post-op (dst = src + dst). The same reorder also
// converts blocked layouts back to plain ones, so accumulation costs one pass in either layout.
//
// Threads. libdnnl here is built on OpenMP (libgomp), like our loops: one thread pool, no
// oversubscription. One global engine and stream; a mutex serialises calls (the cached memory
// objects are shared state).
#include "engine/cpu/conv.h"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"

namespace prsr::cpu {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;
using detail::ConvLayout;

enum class Kind { ConvFwd, ConvBwdData, ConvBwdWeights, DeconvFwd, DeconvBwdData, DeconvBwdWeights };
enum class Role { In, Out, OutAcc };

struct Global {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::mutex mu;
  ConvLayout layout = ConvLayout::Default;
};
Global& global() {
  static Global g;
  return g;
}

// One argument of a primitive. `user` wraps the caller's plain buffer (its handle is set on every
// call); `prim` is what the primitive reads or writes: `user` itself when the layouts agree and
// nothing is accumulated, otherwise a private buffer with a reorder between the two.
struct Arg {
  Role role;
  memory user, prim;
  dnnl::primitive reorder;
  std::unordered_map<int, memory> reorder_args;
  std::vector<dnnl_exec_arg_t> reorder_cargs;  // the same, for the C API (no allocation per call)
  bool has_reorder = false;
};

// Executes through the C API with a prebuilt argument array: the C++ execute() converts its
// map to a vector on every call, which would allocate inside the training step.
inline void execute_c(const dnnl::primitive& p, dnnl::stream& s, std::vector<dnnl_exec_arg_t>& cargs,
                      const std::unordered_map<int, memory>& args) {
  if (cargs.empty())
    for (auto& [k, m] : args) cargs.push_back({k, m.get()});
  const dnnl_status_t st = dnnl_primitive_execute(p.get(), s.get(), int(cargs.size()), cargs.data());
  if (st != dnnl_success) throw prsr::Error("oneDNN primitive execution failed (status " + std::to_string(int(st)) + ")");
}

struct Entry {
  dnnl::primitive prim;
  std::unordered_map<int, memory> args;
  std::vector<dnnl_exec_arg_t> cargs;
  std::vector<Arg> a;  // in the order the pointers are passed to run()
  memory scratchpad;

  void add(int dnnl_arg, Role role, const memory::desc& prim_md, const memory::desc& user_md) {
    auto& eng = global().eng;
    Arg x;
    x.role = role;
    x.user = memory(user_md, eng, DNNL_MEMORY_NONE);
    if (role != Role::OutAcc && prim_md == user_md) {
      x.prim = x.user;
    } else {
      x.prim = memory(prim_md, eng);  // private buffer, allocated once
      x.has_reorder = true;
      if (role == Role::In) {
        x.reorder = dnnl::reorder(x.user, x.prim);
        x.reorder_args = {{DNNL_ARG_FROM, x.user}, {DNNL_ARG_TO, x.prim}};
      } else {
        dnnl::primitive_attr attr;
        if (role == Role::OutAcc) {
          dnnl::post_ops po;
          po.append_sum(1.0f);  // user = prim + user
          attr.set_post_ops(po);
        }
        x.reorder = dnnl::reorder(dnnl::reorder::primitive_desc(x.prim, x.user, attr));
        x.reorder_args = {{DNNL_ARG_FROM, x.prim}, {DNNL_ARG_TO, x.user}};
      }
    }
    args[dnnl_arg] = x.prim;
    a.push_back(std::move(x));
  }

  void run(std::initializer_list<const void*> ptrs) {
    auto& strm = global().strm;
    size_t i = 0;
    for (const void* p : ptrs) a[i++].user.set_data_handle(const_cast<void*>(p));
    for (auto& x : a)
      if (x.role == Role::In && x.has_reorder) execute_c(x.reorder, strm, x.reorder_cargs, x.reorder_args);
    execute_c(prim, strm, cargs, args);
    for (auto& x : a)
      if (x.role != Role::In && x.has_reorder) execute_c(x.reorder, strm, x.reorder_cargs, x.reorder_args);
    strm.wait();
  }
};

// The cache key: direction, layout, bias flag and every geometry field.
using Key = std::array<int, 16>;
std::map<Key, std::unique_ptr<Entry>>& cache() {
  static std::map<Key, std::unique_ptr<Entry>> c;
  return c;
}

// Which layout a primitive works in. ConvLayout::Default is the rule measured best with
// `bench_ops --layouts` on the 2-core AMD EPYC (AVX2, oneDNN 2.6), by CPU time at the model's
// batch-32 shapes:
//   - deconvolutions: blocked. With plain layouts oneDNN only has its reference deconvolution
//     (`ref:any`), 100-1000x slower than `jit:avx2`.
//   - spatial convolutions (3x3, 3x5, 1x3, 4x7, 1x4): blocked. `jit:avx2` direct convolution
//     is about 2x faster than plain `gemm:jit` (im2col) in every direction, reorders included;
//     plain backward-weights is the worst (up to 5x).
//     Exception: backward-data of a layer with fewer than 8 input channels (the C = 3 first
//     layers): blocked pads the 3 channels to 8 and runs slower than gemm; plain.
//   - 1x1 convolutions with 256 channels or more on one side (prior head, conditioning output):
//     plain. They are plain GEMMs (no im2col) that run at the same speed in either layout, and
//     blocked would add reorders and private copies of 100 MB tensors.
//   - smaller 1x1 convolutions (link 64->64, res 32->32): blocked (jit_1x1), 10-40% faster.
bool use_blocked(Kind kind, int ci, int co, int kh, int kw) {
  const ConvLayout l = global().layout;
  if (l != ConvLayout::Default) return l == ConvLayout::Any;
  if (kind == Kind::DeconvFwd || kind == Kind::DeconvBwdData || kind == Kind::DeconvBwdWeights)
    return true;
  if (kh == 1 && kw == 1) return std::max(ci, co) < 256;
  if (kind == Kind::ConvBwdData && ci < 8) return false;
  return true;
}

memory::desc md(memory::dims dims, tag plain, bool any) {
  return memory::desc(dims, dt::f32, any ? tag::any : plain);
}
memory::desc plain_md(memory::dims dims, tag plain) { return memory::desc(dims, dt::f32, plain); }

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// ---------------------------------------------------------------- convolution
// y[n,o,i,j] = b[o] + sum_{c,ky,kx} w[o,c,ky,kx] x[n, c, i + ky - pad_t, j + kx - pad_l]
// is oneDNN's direct convolution with strides 1, padding_l {pad_t, pad_l}, padding_r {pad_b, pad_r}.
struct ConvDims {
  memory::dims src, wei, bias, dst, strides, pad_l, pad_r;
  explicit ConvDims(const ConvGeom& g)
      : src{g.n, g.ci, g.h, g.w},
        wei{g.co, g.ci, g.kh, g.kw},
        bias{g.co},
        dst{g.n, g.co, g.ho(), g.wo()},
        strides{1, 1},
        pad_l{g.pad_t, g.pad_l},
        pad_r{g.pad_b, g.pad_r} {}
};

Key conv_key(Kind k, bool bias, bool any, const ConvGeom& g) {
  return Key{int(k), int(bias), int(any), g.n, g.ci, g.h, g.w, g.co,
             g.kh, g.kw, g.pad_t, g.pad_b, g.pad_l, g.pad_r, 0, 0};
}

dnnl::convolution_forward::primitive_desc conv_fwd_pd(const ConvDims& d, bool bias, bool any,
                                                      const dnnl::primitive_attr& attr) {
  using F = dnnl::convolution_forward;
  const auto src = md(d.src, tag::nchw, any), wei = md(d.wei, tag::oihw, any),
             dst = md(d.dst, tag::nchw, any), b = plain_md(d.bias, tag::x);
  const auto desc = bias ? F::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                   src, wei, b, dst, d.strides, d.pad_l, d.pad_r)
                         : F::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                   src, wei, dst, d.strides, d.pad_l, d.pad_r);
  return F::primitive_desc(desc, attr, global().eng);
}

std::unique_ptr<Entry> build_conv(Kind kind, bool bias, bool any, const ConvGeom& g) {
  const ConvDims d(g);
  const auto attr = user_scratchpad();
  const auto u_src = plain_md(d.src, tag::nchw), u_wei = plain_md(d.wei, tag::oihw),
             u_dst = plain_md(d.dst, tag::nchw), u_bias = plain_md(d.bias, tag::x);
  auto e = std::make_unique<Entry>();
  if (kind == Kind::ConvFwd) {
    const auto pd = conv_fwd_pd(d, bias, any, attr);
    e->add(DNNL_ARG_SRC, Role::In, pd.src_desc(), u_src);
    e->add(DNNL_ARG_WEIGHTS, Role::In, pd.weights_desc(), u_wei);
    if (bias) e->add(DNNL_ARG_BIAS, Role::In, pd.bias_desc(), u_bias);
    e->add(DNNL_ARG_DST, Role::Out, pd.dst_desc(), u_dst);
    e->prim = dnnl::convolution_forward(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  } else if (kind == Kind::ConvBwdData) {
    using B = dnnl::convolution_backward_data;
    const auto hint = conv_fwd_pd(d, false, any, dnnl::primitive_attr());
    const B::desc desc(dnnl::algorithm::convolution_direct, md(d.src, tag::nchw, any),
                       md(d.wei, tag::oihw, any), md(d.dst, tag::nchw, any), d.strides, d.pad_l,
                       d.pad_r);
    const B::primitive_desc pd(desc, attr, global().eng, hint);
    e->add(DNNL_ARG_DIFF_DST, Role::In, pd.diff_dst_desc(), u_dst);
    e->add(DNNL_ARG_WEIGHTS, Role::In, pd.weights_desc(), u_wei);
    e->add(DNNL_ARG_DIFF_SRC, Role::OutAcc, pd.diff_src_desc(), u_src);
    e->prim = B(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  } else {
    using B = dnnl::convolution_backward_weights;
    const auto hint = conv_fwd_pd(d, bias, any, dnnl::primitive_attr());
    const auto src = md(d.src, tag::nchw, any), wei = md(d.wei, tag::oihw, any),
               dst = md(d.dst, tag::nchw, any), b = plain_md(d.bias, tag::x);
    const auto desc = bias ? B::desc(dnnl::algorithm::convolution_direct, src, wei, b, dst,
                                     d.strides, d.pad_l, d.pad_r)
                           : B::desc(dnnl::algorithm::convolution_direct, src, wei, dst,
                                     d.strides, d.pad_l, d.pad_r);
    const B::primitive_desc pd(desc, attr, global().eng, hint);
    e->add(DNNL_ARG_SRC, Role::In, pd.src_desc(), u_src);
    e->add(DNNL_ARG_DIFF_DST, Role::In, pd.diff_dst_desc(), u_dst);
    e->add(DNNL_ARG_DIFF_WEIGHTS, Role::OutAcc, pd.diff_weights_desc(), u_wei);
    if (bias) e->add(DNNL_ARG_DIFF_BIAS, Role::OutAcc, pd.diff_bias_desc(), u_bias);
    e->prim = B(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  }
  e->args[DNNL_ARG_SCRATCHPAD] = e->scratchpad;
  return e;
}

// ---------------------------------------------------------------- transposed convolution
// y[n, o, i*s - pad + ky, j*s - pad + kx] += w[o,c,ky,kx] x[n,c,i,j] is oneDNN's deconvolution
// with weights {co, ci, k, k}, padding_l = pad and padding_r = pad - out_pad: its output size
// (h - 1) s + k - pad_l - pad_r equals ho = (h - 1) s - 2 pad + k + out_pad.
struct DeconvDims {
  memory::dims src, wei, bias, dst, strides, pad_l, pad_r;
  explicit DeconvDims(const DeconvGeom& g)
      : src{g.n, g.ci, g.h, g.w},
        wei{g.co, g.ci, g.k, g.k},
        bias{g.co},
        dst{g.n, g.co, g.ho(), g.wo()},
        strides{g.stride, g.stride},
        pad_l{g.pad, g.pad},
        pad_r{g.pad - g.out_pad, g.pad - g.out_pad} {}
};

Key deconv_key(Kind k, bool bias, bool any, const DeconvGeom& g) {
  return Key{int(k), int(bias), int(any), g.n, g.ci, g.h, g.w, g.co,
             g.k, g.stride, g.pad, g.out_pad, 0, 0, 0, 0};
}

dnnl::deconvolution_forward::primitive_desc deconv_fwd_pd(const DeconvDims& d, bool bias, bool any,
                                                          const dnnl::primitive_attr& attr) {
  using F = dnnl::deconvolution_forward;
  const auto src = md(d.src, tag::nchw, any), wei = md(d.wei, tag::oihw, any),
             dst = md(d.dst, tag::nchw, any), b = plain_md(d.bias, tag::x);
  const auto desc = bias ? F::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::deconvolution_direct,
                                   src, wei, b, dst, d.strides, d.pad_l, d.pad_r)
                         : F::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::deconvolution_direct,
                                   src, wei, dst, d.strides, d.pad_l, d.pad_r);
  return F::primitive_desc(desc, attr, global().eng);
}

std::unique_ptr<Entry> build_deconv(Kind kind, bool bias, bool any, const DeconvGeom& g) {
  const DeconvDims d(g);
  const auto attr = user_scratchpad();
  const auto u_src = plain_md(d.src, tag::nchw), u_wei = plain_md(d.wei, tag::oihw),
             u_dst = plain_md(d.dst, tag::nchw), u_bias = plain_md(d.bias, tag::x);
  auto e = std::make_unique<Entry>();
  if (kind == Kind::DeconvFwd) {
    const auto pd = deconv_fwd_pd(d, bias, any, attr);
    e->add(DNNL_ARG_SRC, Role::In, pd.src_desc(), u_src);
    e->add(DNNL_ARG_WEIGHTS, Role::In, pd.weights_desc(), u_wei);
    if (bias) e->add(DNNL_ARG_BIAS, Role::In, pd.bias_desc(), u_bias);
    e->add(DNNL_ARG_DST, Role::Out, pd.dst_desc(), u_dst);
    e->prim = dnnl::deconvolution_forward(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  } else if (kind == Kind::DeconvBwdData) {
    using B = dnnl::deconvolution_backward_data;
    const auto hint = deconv_fwd_pd(d, false, any, dnnl::primitive_attr());
    const B::desc desc(dnnl::algorithm::deconvolution_direct, md(d.src, tag::nchw, any),
                       md(d.wei, tag::oihw, any), md(d.dst, tag::nchw, any), d.strides, d.pad_l,
                       d.pad_r);
    const B::primitive_desc pd(desc, attr, global().eng, hint);
    e->add(DNNL_ARG_DIFF_DST, Role::In, pd.diff_dst_desc(), u_dst);
    e->add(DNNL_ARG_WEIGHTS, Role::In, pd.weights_desc(), u_wei);
    e->add(DNNL_ARG_DIFF_SRC, Role::OutAcc, pd.diff_src_desc(), u_src);
    e->prim = B(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  } else {
    using B = dnnl::deconvolution_backward_weights;
    const auto hint = deconv_fwd_pd(d, bias, any, dnnl::primitive_attr());
    const auto src = md(d.src, tag::nchw, any), wei = md(d.wei, tag::oihw, any),
               dst = md(d.dst, tag::nchw, any), b = plain_md(d.bias, tag::x);
    const auto desc = bias ? B::desc(dnnl::algorithm::deconvolution_direct, src, wei, b, dst,
                                     d.strides, d.pad_l, d.pad_r)
                           : B::desc(dnnl::algorithm::deconvolution_direct, src, wei, dst,
                                     d.strides, d.pad_l, d.pad_r);
    const B::primitive_desc pd(desc, attr, global().eng, hint);
    e->add(DNNL_ARG_SRC, Role::In, pd.src_desc(), u_src);
    e->add(DNNL_ARG_DIFF_DST, Role::In, pd.diff_dst_desc(), u_dst);
    e->add(DNNL_ARG_DIFF_WEIGHTS, Role::OutAcc, pd.diff_weights_desc(), u_wei);
    if (bias) e->add(DNNL_ARG_DIFF_BIAS, Role::OutAcc, pd.diff_bias_desc(), u_bias);
    e->prim = B(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  }
  e->args[DNNL_ARG_SCRATCHPAD] = e->scratchpad;
  return e;
}

// The cached entry for (kind, bias, geometry), built on first use.
template <class Geom, class KeyFn, class BuildFn>
Entry& lookup(Kind kind, bool bias, bool any, const Geom& g, KeyFn key_fn, BuildFn build_fn) {
  auto& c = cache();
  const Key key = key_fn(kind, bias, any, g);
  auto it = c.find(key);
  if (it != c.end()) return *it->second;
  try {
    return *c.emplace(key, build_fn(kind, bias, any, g)).first->second;
  } catch (const dnnl::error& err) {
    throw Error(std::string("oneDNN: cannot create a convolution primitive: ") + err.what());
  }
}

bool conv_blocked(Kind k, const ConvGeom& g) { return use_blocked(k, g.ci, g.co, g.kh, g.kw); }
bool deconv_blocked(Kind k, const DeconvGeom& g) { return use_blocked(k, g.ci, g.co, g.k, g.k); }

// db[o] += sum_{n, p} dy[n, o, p] (used when dw is not requested: oneDNN only gives the bias
// gradient together with the weight gradient). One channel per iteration: deterministic.
void bias_grad(float* db, const float* dy, int n, int co, int hw) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < co; ++o) {
    double s = 0;
    for (int b = 0; b < n; ++b) {
      const float* row = dy + (size_t(b) * co + o) * hw;
      double t = 0;
#pragma omp simd reduction(+ : t)
      for (int p = 0; p < hw; ++p) t += double(row[p]);
      s += t;
    }
    db[o] += float(s);
  }
}

}  // namespace

namespace detail {
void set_conv_layout(ConvLayout layout) {
  std::lock_guard<std::mutex> lock(global().mu);
  global().layout = layout;
}
int conv_cache_size() {
  std::lock_guard<std::mutex> lock(global().mu);
  return int(cache().size());
}
}  // namespace detail

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g) {
  std::lock_guard<std::mutex> lock(global().mu);
  Entry& e = lookup(Kind::ConvFwd, b != nullptr, conv_blocked(Kind::ConvFwd, g), g, conv_key,
                    build_conv);
  if (b)
    e.run({x, w, b, y});
  else
    e.run({x, w, y});
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, const ConvGeom& g) {
  std::lock_guard<std::mutex> lock(global().mu);
  if (dx)
    lookup(Kind::ConvBwdData, false, conv_blocked(Kind::ConvBwdData, g), g, conv_key, build_conv)
        .run({dy, w, dx});
  if (dw) {
    Entry& e = lookup(Kind::ConvBwdWeights, db != nullptr, conv_blocked(Kind::ConvBwdWeights, g),
                      g, conv_key, build_conv);
    if (db)
      e.run({x, dy, dw, db});
    else
      e.run({x, dy, dw});
  } else if (db) {
    bias_grad(db, dy, g.n, g.co, g.ho() * g.wo());
  }
}

void deconv2d_forward(float* y, const float* x, const float* w, const float* b,
                      const DeconvGeom& g) {
  std::lock_guard<std::mutex> lock(global().mu);
  Entry& e = lookup(Kind::DeconvFwd, b != nullptr, deconv_blocked(Kind::DeconvFwd, g), g,
                    deconv_key, build_deconv);
  if (b)
    e.run({x, w, b, y});
  else
    e.run({x, w, y});
}

void deconv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                       const float* w, const DeconvGeom& g) {
  std::lock_guard<std::mutex> lock(global().mu);
  if (dx)
    lookup(Kind::DeconvBwdData, false, deconv_blocked(Kind::DeconvBwdData, g), g, deconv_key,
           build_deconv)
        .run({dy, w, dx});
  if (dw) {
    Entry& e = lookup(Kind::DeconvBwdWeights, db != nullptr,
                      deconv_blocked(Kind::DeconvBwdWeights, g), g, deconv_key, build_deconv);
    if (db)
      e.run({x, dy, dw, db});
    else
      e.run({x, dy, dw});
  } else if (db) {
    bias_grad(db, dy, g.n, g.co, g.ho() * g.wo());
  }
}

}  // namespace prsr::cpu
