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
// A fresh gradient (backend.h) takes a second reorder without the sum: it never reads the
// caller's buffer.
//
// Precision. fp32 by default (exact: direct convolutions, no Winograd). With set_bf16(true)
// (--precision bf16, CPUs with AVX512_BF16 or AMX-BF16 only: engine/cpu/isa.cpp) every primitive
// reads src / weights / diff_dst in bf16 and writes fp32 outputs and gradients; the reorders from
// the caller's fp32 buffers into the primitive's blocked layout are also the conversions. The
// 1x1 GEMM path below is fp32 only: in bf16 every convolution runs through oneDNN (densely).
//
// Threads. libdnnl here is built on OpenMP (libgomp), like our loops: one thread pool, no
// oversubscription. One global engine and stream; a mutex serialises calls (the cached memory
// objects are shared state).
#include "engine/cpu/conv.h"

#include <omp.h>
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
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

namespace prsr {
double now_seconds();  // engine/graph.h
}

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
  bool profile = false;  // time every entry's phases (detail::set_conv_profile)
  bool bf16 = false;     // inputs in bf16, fp32 accumulation and outputs (set_bf16)
};
Global& global() {
  static Global g;
  return g;
}

// The GEMM path's share of the conv profile (1x1 convolutions run through dnnl_sgemm, no
// primitive): seconds and calls per "direction geometry" name.
struct GemmTime {
  double t = 0;
  long calls = 0;
};
std::map<std::string, GemmTime>& gemm_times() {
  static std::map<std::string, GemmTime> m;
  return m;
}

// One argument of a primitive. `user` wraps the caller's plain buffer (its handle is set on every
// call); `prim` is what the primitive reads or writes: `user` itself when the layouts agree and
// nothing is accumulated, otherwise a private buffer with a reorder between the two.
struct Arg {
  Role role;
  int grad_bit = -1;  // OutAcc: which bit of `fresh` (backend.h) this gradient is
  memory user, prim;
  dnnl::primitive reorder;
  dnnl::primitive reorder_fresh;  // OutAcc: the same without the sum (user = prim)
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
  if (st != dnnl_success)
    throw prsr::Error("oneDNN primitive execution failed (status " + std::to_string(int(st)) + ")");
}

struct Entry {
  dnnl::primitive prim;
  std::unordered_map<int, memory> args;
  std::vector<dnnl_exec_arg_t> cargs;
  std::vector<Arg> a;  // in the order the pointers are passed to run()
  memory scratchpad;
  std::string name;                        // "direction geometry layout", for the profile
  double t_in = 0, t_prim = 0, t_out = 0;  // seconds in reorders in, primitive, reorders out
  long calls = 0;

  void add(int dnnl_arg, Role role, const memory::desc& prim_md, const memory::desc& user_md, int grad_bit = -1) {
    auto& eng = global().eng;
    Arg x;
    x.role = role;
    x.grad_bit = grad_bit;
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
        if (role == Role::OutAcc) x.reorder_fresh = dnnl::reorder(x.prim, x.user);
        x.reorder_args = {{DNNL_ARG_FROM, x.prim}, {DNNL_ARG_TO, x.user}};
      }
    }
    args[dnnl_arg] = x.prim;
    a.push_back(std::move(x));
  }

  // `reuse`: an input argument (index into a[]) whose converted copy already sits in `from`'s
  // private buffer (same layout): its reorder is skipped and the primitive reads that buffer.
  // `fresh`: the gradient bits (Arg::grad_bit) whose caller buffers are fresh (overwritten).
  void run(std::initializer_list<const void*> ptrs, int reuse = -1, const Arg* from = nullptr, unsigned fresh = 0) {
    auto& strm = global().strm;
    const bool prof = global().profile;
    size_t i = 0;
    for (const void* p : ptrs) a[i++].user.set_data_handle(const_cast<void*>(p));
    const double t0 = prof ? now_seconds() : 0;
    for (size_t k = 0; k < a.size(); ++k)
      if (a[k].role == Role::In && a[k].has_reorder && int(k) != reuse)
        execute_c(a[k].reorder, strm, a[k].reorder_cargs, a[k].reorder_args);
    if (prof) strm.wait();
    const double t1 = prof ? now_seconds() : 0;
    if (reuse >= 0) {
      if (cargs.empty())
        for (auto& [k, m] : args) cargs.push_back({k, m.get()});
      dnnl_exec_arg_t* slot = nullptr;
      for (auto& c : cargs)
        if (c.memory == a[reuse].prim.get()) slot = &c;
      slot->memory = from->prim.get();
      execute_c(prim, strm, cargs, args);
      slot->memory = a[reuse].prim.get();
    } else {
      execute_c(prim, strm, cargs, args);
    }
    if (prof) strm.wait();
    const double t2 = prof ? now_seconds() : 0;
    for (auto& x : a) {
      if (x.role == Role::In || !x.has_reorder) continue;
      const bool overwrite = x.role == Role::OutAcc && x.grad_bit >= 0 && (fresh >> x.grad_bit & 1u);
      execute_c(overwrite ? x.reorder_fresh : x.reorder, strm, x.reorder_cargs, x.reorder_args);
    }
    strm.wait();
    if (prof) {
      const double t3 = now_seconds();
      t_in += t1 - t0;
      t_prim += t2 - t1;
      t_out += t3 - t2;
      ++calls;
    }
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
// bf16: always blocked (oneDNN's bf16 kernels work on blocked layouts; the reorders into them
// are also the fp32 -> bf16 conversions).
bool use_blocked(Kind kind, int ci, int co, int kh, int kw) {
  if (global().bf16) return true;
  const ConvLayout l = global().layout;
  if (l != ConvLayout::Default) return l == ConvLayout::Any;
  if (kind == Kind::DeconvFwd || kind == Kind::DeconvBwdData || kind == Kind::DeconvBwdWeights) return true;
  if (kh == 1 && kw == 1) return std::max(ci, co) < 256;
  if (kind == Kind::ConvBwdData && ci < 8) return false;
  return true;
}

memory::desc md(memory::dims dims, tag plain, bool any, dt type = dt::f32) {
  return memory::desc(dims, type, any ? tag::any : plain);
}
// The data type the primitives read their inputs in (src, weights, diff_dst): bf16 with
// set_bf16(true), otherwise fp32. Outputs and gradients are always fp32 (fp32 accumulation).
dt input_type() { return global().bf16 ? dt::bf16 : dt::f32; }
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
  return Key{int(k),  int(bias), int(any),           g.n, g.ci, g.h, g.w, g.co, g.kh, g.kw, g.pad_t, g.pad_b,
             g.pad_l, g.pad_r,   int(global().bf16), 0};
}

// The oneDNN primitive families of a convolution and of a transposed convolution: the same
// three directions, built the same way (below) from the same dims.
struct ConvPrims {
  using Fwd = dnnl::convolution_forward;
  using BwdData = dnnl::convolution_backward_data;
  using BwdWeights = dnnl::convolution_backward_weights;
  static constexpr dnnl::algorithm alg = dnnl::algorithm::convolution_direct;
};
struct DeconvPrims {
  using Fwd = dnnl::deconvolution_forward;
  using BwdData = dnnl::deconvolution_backward_data;
  using BwdWeights = dnnl::deconvolution_backward_weights;
  static constexpr dnnl::algorithm alg = dnnl::algorithm::deconvolution_direct;
};

enum class Direction { Fwd, BwdData, BwdWeights };

template <class P, class Dims>
typename P::Fwd::primitive_desc fwd_pd(const Dims& d, bool bias, bool any, const dnnl::primitive_attr& attr) {
  using F = typename P::Fwd;
  const auto src = md(d.src, tag::nchw, any, input_type()), wei = md(d.wei, tag::oihw, any, input_type()),
             dst = md(d.dst, tag::nchw, any), b = plain_md(d.bias, tag::x);
  const auto desc =
      bias ? typename F::desc(dnnl::prop_kind::forward_training, P::alg, src, wei, b, dst, d.strides, d.pad_l, d.pad_r)
           : typename F::desc(dnnl::prop_kind::forward_training, P::alg, src, wei, dst, d.strides, d.pad_l, d.pad_r);
  return typename F::primitive_desc(desc, attr, global().eng);
}

// One cached entry: the primitive of direction `dir`, with its arguments wired to plain user
// buffers (reorders where the primitive chose a blocked layout; gradients accumulate).
template <class P, class Dims>
std::unique_ptr<Entry> build_entry(Direction dir, bool bias, bool any, const Dims& d) {
  const auto attr = user_scratchpad();
  const auto u_src = plain_md(d.src, tag::nchw), u_wei = plain_md(d.wei, tag::oihw), u_dst = plain_md(d.dst, tag::nchw),
             u_bias = plain_md(d.bias, tag::x);
  auto e = std::make_unique<Entry>();
  if (dir == Direction::Fwd) {
    const auto pd = fwd_pd<P>(d, bias, any, attr);
    e->add(DNNL_ARG_SRC, Role::In, pd.src_desc(), u_src);
    e->add(DNNL_ARG_WEIGHTS, Role::In, pd.weights_desc(), u_wei);
    if (bias) e->add(DNNL_ARG_BIAS, Role::In, pd.bias_desc(), u_bias);
    e->add(DNNL_ARG_DST, Role::Out, pd.dst_desc(), u_dst);
    e->prim = typename P::Fwd(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  } else if (dir == Direction::BwdData) {
    using B = typename P::BwdData;
    const auto hint = fwd_pd<P>(d, false, any, dnnl::primitive_attr());
    const typename B::desc desc(P::alg, md(d.src, tag::nchw, any), md(d.wei, tag::oihw, any, input_type()),
                                md(d.dst, tag::nchw, any, input_type()), d.strides, d.pad_l, d.pad_r);
    const typename B::primitive_desc pd(desc, attr, global().eng, hint);
    e->add(DNNL_ARG_DIFF_DST, Role::In, pd.diff_dst_desc(), u_dst);
    e->add(DNNL_ARG_WEIGHTS, Role::In, pd.weights_desc(), u_wei);
    e->add(DNNL_ARG_DIFF_SRC, Role::OutAcc, pd.diff_src_desc(), u_src, 0);
    e->prim = B(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  } else {
    using B = typename P::BwdWeights;
    const auto hint = fwd_pd<P>(d, bias, any, dnnl::primitive_attr());
    const auto src = md(d.src, tag::nchw, any, input_type()), wei = md(d.wei, tag::oihw, any),
               dst = md(d.dst, tag::nchw, any, input_type()), b = plain_md(d.bias, tag::x);
    const auto desc = bias ? typename B::desc(P::alg, src, wei, b, dst, d.strides, d.pad_l, d.pad_r)
                           : typename B::desc(P::alg, src, wei, dst, d.strides, d.pad_l, d.pad_r);
    const typename B::primitive_desc pd(desc, attr, global().eng, hint);
    e->add(DNNL_ARG_SRC, Role::In, pd.src_desc(), u_src);
    e->add(DNNL_ARG_DIFF_DST, Role::In, pd.diff_dst_desc(), u_dst);
    e->add(DNNL_ARG_DIFF_WEIGHTS, Role::OutAcc, pd.diff_weights_desc(), u_wei, 1);
    if (bias) e->add(DNNL_ARG_DIFF_BIAS, Role::OutAcc, pd.diff_bias_desc(), u_bias, 2);
    e->prim = B(pd);
    e->scratchpad = memory(pd.scratchpad_desc(), global().eng);
  }
  e->args[DNNL_ARG_SCRATCHPAD] = e->scratchpad;
  return e;
}

std::unique_ptr<Entry> build_conv(Kind kind, bool bias, bool any, const ConvGeom& g) {
  const Direction dir = kind == Kind::ConvFwd       ? Direction::Fwd
                        : kind == Kind::ConvBwdData ? Direction::BwdData
                                                    : Direction::BwdWeights;
  return build_entry<ConvPrims>(dir, bias, any, ConvDims(g));
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
  return Key{int(k), int(bias), int(any),           g.n, g.ci, g.h, g.w, g.co, g.k, g.stride, g.pad, g.out_pad,
             0,      0,         int(global().bf16), 0};
}

std::unique_ptr<Entry> build_deconv(Kind kind, bool bias, bool any, const DeconvGeom& g) {
  const Direction dir = kind == Kind::DeconvFwd       ? Direction::Fwd
                        : kind == Kind::DeconvBwdData ? Direction::BwdData
                                                      : Direction::BwdWeights;
  return build_entry<DeconvPrims>(dir, bias, any, DeconvDims(g));
}

std::string dnnl_pd_impl(const dnnl::primitive& p) {
  const_dnnl_primitive_desc_t pd = nullptr;
  dnnl_primitive_get_primitive_desc(p.get(), &pd);
  const char* s = nullptr;
  if (pd) dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
  return s ? s : "?";
}

// The cached entry for (kind, bias, geometry), built on first use.
template <class Geom, class KeyFn, class BuildFn>
Entry& lookup(Kind kind, bool bias, bool any, const Geom& g, KeyFn key_fn, BuildFn build_fn) {
  auto& c = cache();
  const Key key = key_fn(kind, bias, any, g);
  auto it = c.find(key);
  if (it != c.end()) return *it->second;
  try {
    auto e = build_fn(kind, bias, any, g);
    static const char* kind_names[] = {"conv_fwd",   "conv_bwd_data",   "conv_bwd_w",
                                       "deconv_fwd", "deconv_bwd_data", "deconv_bwd_w"};
    e->name = std::string(kind_names[int(kind)]) + " n" + std::to_string(g.n) + " " + std::to_string(g.ci) + "->" +
              std::to_string(g.co) + " " + std::to_string(g.h) + "x" + std::to_string(g.w) + " k" +
              std::to_string(key[8]) + "x" + std::to_string(key[9]) + (any ? " blocked" : " plain") +
              (bias ? " +b" : "") + (global().bf16 ? " bf16" : "");
    return *c.emplace(key, std::move(e)).first->second;
  } catch (const dnnl::error& err) {
    throw Error(std::string("oneDNN: cannot create a convolution primitive: ") + err.what());
  }
}

bool conv_blocked(Kind k, const ConvGeom& g) { return use_blocked(k, g.ci, g.co, g.kh, g.kw); }
bool deconv_blocked(Kind k, const DeconvGeom& g) { return use_blocked(k, g.ci, g.co, g.k, g.k); }

// db[o] += sum_{n, p} dy[n, o, p] (used when dw is not requested: oneDNN only gives the bias
// gradient together with the weight gradient). One channel per iteration: deterministic.
void bias_grad(float* db, const float* dy, int n, int co, int hw, bool fresh) {
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
    db[o] = (fresh ? 0.0f : db[o]) + float(s);
  }
}

// ---------------------------------------------------------------- 1x1 convolutions as GEMMs
// A 1x1 convolution without padding on plain NCHW is one GEMM per image (row-major):
//   y_n[co, hw] = W[co, ci] x_n[ci, hw] + b          (forward, overwrites)
//   dx_n[ci, hw] += W^T[ci, co] dy_n[co, hw]         (backward data: beta = 1 accumulates in place)
//   dW[co, ci] += sum_n dy_n[co, hw] x_n^T[hw, ci]   (backward weights)
// Called straight through dnnl_sgemm: no private buffers, no reorders, and the backward
// accumulates with beta = 1 instead of a scratch result plus a reorder-sum pass.
// Threads: one image per iteration of an OpenMP loop (oneDNN's sgemm runs single-threaded inside
// a parallel region); with fewer images than threads, the sgemm itself is threaded.
// The weight gradient is summed per fixed block of images, and the blocks are added in order:
// the result does not depend on the number of threads.
// Which 1x1 convolutions take this path (ConvLayout::Default only), measured on the idle 2-core
// EPYC with `bench_ops --only 1x1` (docs/performance.md): the large ones (>= 256 channels on one
// side: prior head, conditioning output) forward, and backward when the input side is narrow
// (head1 32->1024 backward-weights: 29 ms instead of 98; conditioning output) or when colour
// blocks let the GEMMs skip the masked third of the weights (head2 1024->768: dense, oneDNN was
// as fast as sgemm there). The small link/res convs stay on oneDNN, which is faster there.
bool gemm_1x1(Kind kind, const ConvGeom& g) {
  if (global().layout != ConvLayout::Default || global().bf16 || g.kh != 1 || g.kw != 1 || g.pad_t || g.pad_b ||
      g.pad_l || g.pad_r || std::max(g.ci, g.co) < 256)
    return false;
  return kind == Kind::ConvFwd || g.ci < 256 || g.colors > 0;
}

void dnnl_sgemm_checked(char ta, char tb, long m, long n, long k, float alpha, const float* a, long lda, const float* b,
                        long ldb, float beta, float* c, long ldc) {
  const dnnl_status_t st = dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success) throw prsr::Error("dnnl_sgemm failed (status " + std::to_string(int(st)) + ")");
}

// oneDNN 2.6's sgemm is up to 1.8x slower on these shapes when a non-transposed B starts on a
// 32-byte boundary (as every arena tensor does: 256-byte aligned, rows of 4 KiB): head2's
// backward-data product 394 ms per step with B aligned against 223 ms with B one float off,
// the forward 235 against 208 (oneDNN's path choice, measured on the 2 vCPU AMD EPYC; the C and
// A alignments make no difference; docs/performance.md). So such a product runs as two: columns
// [1, n) from b + 1, which is off the boundary, then column 0 alone. Every element of C is still
// one product over the same k terms, computed by one call: deterministic, as before.
// (The callers skip the blocks that read no input: k > 0 here. An empty weight-gradient block,
// mask A's first colour, has n = 0.)
void sgemm(char ta, char tb, long m, long n, long k, float alpha, const float* a, long lda, const float* b, long ldb,
           float beta, float* c, long ldc) {
  if (m <= 0 || n <= 0) return;
  if (tb == 'N' && n > 8 && reinterpret_cast<uintptr_t>(b) % 32 == 0) {
    dnnl_sgemm_checked(ta, tb, m, n - 1, k, alpha, a, lda, b + 1, ldb, beta, c + 1, ldc);
    dnnl_sgemm_checked(ta, tb, m, 1, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  dnnl_sgemm_checked(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

bool parallel_images(int n) { return n >= 2 * omp_get_max_threads() || (n >= omp_get_max_threads() && n > 1); }

// Runs one(i) for every image, spread over the threads when there are enough images (each sgemm
// then runs single-threaded), otherwise in order with threaded sgemms.
template <class F>
void for_images(int n, F one) {
  if (parallel_images(n)) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; ++i) one(i);
  } else {
    for (int i = 0; i < n; ++i) one(i);
  }
}

// Every GEMM below runs block by block (colour_blocks(): output rows [o0, o1) read input channels
// [0, k1)); a dense conv is the single block {0, co, ci}.
void conv1x1_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g) {
  const long hw = long(g.h) * g.w;
  const ColourBlocks cb = colour_blocks(g);
  for_images(g.n, [&](int i) {
    float* yi = y + size_t(i) * g.co * hw;
    const float* xi = x + size_t(i) * g.ci * hw;
    if (b)
      for (int o = 0; o < g.co; ++o) std::fill(yi + o * hw, yi + (o + 1) * hw, b[o]);
    // by input colour group: columns [k1 of the previous block, k1) feed rows [o0, co). Each
    // part of x and of W is packed once (measured 10% faster than by output block).
    int kprev = 0;
    bool first = true;
    for (int k = 0; k < cb.count; ++k) {
      const ColourBlock& bl = cb.b[k];
      if (bl.k1 == kprev) continue;
      if (first && !b) std::fill(yi, yi + bl.o0 * hw, 0.0f);  // rows that read nothing (mask A)
      sgemm('N', 'N', g.co - bl.o0, hw, bl.k1 - kprev, 1.0f, w + size_t(bl.o0) * g.ci + kprev, g.ci, xi + kprev * hw,
            hw, (b || !first) ? 1.0f : 0.0f, yi + bl.o0 * hw, hw);
      first = false;
      kprev = bl.k1;
    }
    if (first && !b) std::fill(yi, yi + g.co * hw, 0.0f);  // no input read at all
  });
}

// Two ways to run dx_n = W^T dy_n over the colour blocks (block k: output rows [o0, o1) read the
// input channels [0, k1); k1 never decreases from block to block):
//  - by output block: dx[0:k1] += W[o0:o1, 0:k1]^T dy[o0:o1], one accumulating product per block
//    (A read transposed). Used for narrow inputs (head1: ci = 32, where the segments below would
//    be products of 10-11 rows: twice as slow, measured).
//  - by input segment: the channels [k1 of the previous block, k1) are read by this block and every
//    later one, i.e. by the output rows [o0, co) (the blocks are consecutive output ranges, as in
//    the forward), so each segment is ONE product dx[k0:k1] = W^T[k0:k1, o0:co] dy[o0:co], written
//    once, with W^T made once per call (row-major [ci, co], a buffer kept between calls) so that
//    A is read in order. Used for wide inputs (head2: 8% faster than by output block, measured:
//    docs/performance.md).
// Both are deterministic (a fixed order of products). A fresh dx is overwritten: the first
// product writes with beta = 0; channels no block reads (mask A) are zeroed.
void conv1x1_backward_data(float* dx, const float* dy, const float* w, const ConvGeom& g, bool fresh) {
  const long hw = long(g.h) * g.w;
  const ColourBlocks cb = colour_blocks(g);
  const int last = cb.count - 1;
  const int read = cb.b[last].k1;  // channels [read, ci) are read by no block
  const bool by_segment = g.ci >= 256;
  float* WT = nullptr;
  if (by_segment) {
    static std::vector<float> wt;  // kept between calls (calls are serialised by global().mu)
    if (wt.size() < size_t(g.co) * g.ci) wt.resize(size_t(g.co) * g.ci);
    WT = wt.data();
#pragma omp parallel for schedule(static)
    for (int i = 0; i < g.ci; ++i)
      for (int o = 0; o < g.co; ++o) WT[size_t(i) * g.co + o] = w[size_t(o) * g.ci + i];
  }
  for_images(g.n, [&](int i) {
    float* dxi = dx + size_t(i) * g.ci * hw;
    const float* dyi = dy + size_t(i) * g.co * hw;
    if (fresh) std::fill(dxi + size_t(read) * hw, dxi + size_t(g.ci) * hw, 0.0f);
    if (by_segment) {
      int kprev = 0;
      for (int k = 0; k < cb.count; ++k) {
        const ColourBlock& bl = cb.b[k];
        if (bl.k1 == kprev) continue;
        sgemm('N', 'N', bl.k1 - kprev, hw, g.co - bl.o0, 1.0f, WT + size_t(kprev) * g.co + bl.o0, g.co,
              dyi + size_t(bl.o0) * hw, hw, fresh ? 0.0f : 1.0f, dxi + size_t(kprev) * hw, hw);
        kprev = bl.k1;
      }
      return;
    }
    for (int j = 0; j < cb.count; ++j) {  // a fresh dx: the widest block first, overwriting
      const int k = fresh ? last - j : j;
      const ColourBlock& bl = cb.b[k];
      if (bl.k1 > 0)
        sgemm('T', 'N', bl.k1, hw, bl.o1 - bl.o0, 1.0f, w + size_t(bl.o0) * g.ci, g.ci, dyi + size_t(bl.o0) * hw, hw,
              fresh && j == 0 ? 0.0f : 1.0f, dxi, hw);
    }
  });
}

// Images per block of the weight gradient: fixed by the shape, so the sum order is too.
constexpr int kWeightBlock = 4;

// dW[o0:o1, 0:k1] (+)= dy_i[o0:o1] x_i[0:k1]^T for each colour block.
void weight_gemm(float* dw, const float* dyi, const float* xi, const ConvGeom& g, const ColourBlocks& cb, long hw,
                 float beta) {
  for (int k = 0; k < cb.count; ++k) {
    const ColourBlock& bl = cb.b[k];
    sgemm('N', 'T', bl.o1 - bl.o0, bl.k1, hw, 1.0f, dyi + bl.o0 * hw, hw, xi, hw, beta, dw + size_t(bl.o0) * g.ci,
          g.ci);
  }
}

void conv1x1_backward_weights(float* dw, const float* dy, const float* x, const ConvGeom& g) {
  const long hw = long(g.h) * g.w;
  const size_t nw = size_t(g.co) * g.ci;
  const ColourBlocks cb = colour_blocks(g);
  const int blocks = (g.n + kWeightBlock - 1) / kWeightBlock;
  if (blocks == 1) {
    // dW += sum_n dy_n x_n^T, image by image, threaded sgemm
    for (int i = 0; i < g.n; ++i)
      weight_gemm(dw, dy + size_t(i) * g.co * hw, x + size_t(i) * g.ci * hw, g, cb, hw, 1.0f);
    return;
  }
  // one partial sum per block of images (allocated on the first call of the largest shape, then
  // reused); only the colour blocks' entries are written and summed
  static std::vector<float> part;  // (calls are serialised by global().mu)
  if (part.size() < nw * blocks) part.resize(nw * blocks);
#pragma omp parallel for schedule(static)
  for (int bk = 0; bk < blocks; ++bk) {
    float* p = part.data() + nw * bk;
    const int i0 = bk * kWeightBlock, i1 = std::min(g.n, i0 + kWeightBlock);
    for (int i = i0; i < i1; ++i)
      weight_gemm(p, dy + size_t(i) * g.co * hw, x + size_t(i) * g.ci * hw, g, cb, hw, i == i0 ? 0.0f : 1.0f);
  }
  for (int k = 0; k < cb.count; ++k) {
    const ColourBlock& bl = cb.b[k];
#pragma omp parallel for schedule(static) if (long(bl.o1 - bl.o0) * bl.k1 >= 32768)
    for (int o = bl.o0; o < bl.o1; ++o) {
      float* d = dw + size_t(o) * g.ci;
      for (int bk = 0; bk < blocks; ++bk) {  // blocks added in order: deterministic
        const float* p = part.data() + nw * bk + size_t(o) * g.ci;
#pragma omp simd
        for (int c = 0; c < bl.k1; ++c) d[c] += p[c];
      }
    }
  }
}

// Runs f, adding its time to the GEMM path's profile entry `direction` of g when profiling.
template <class F>
void gemm_timed(const char* direction, const ConvGeom& g, F f) {
  if (!global().profile) return f();
  const double t0 = now_seconds();
  f();
  GemmTime& e = gemm_times()[std::string(direction) + " n" + std::to_string(g.n) + " " + std::to_string(g.ci) + "->" +
                             std::to_string(g.co) + " " + std::to_string(g.h) + "x" + std::to_string(g.w) + " k1x1" +
                             (g.colors > 0 ? " colour blocks" : "")];
  e.t += now_seconds() - t0;
  ++e.calls;
}

}  // namespace

namespace detail {
void set_conv_layout(ConvLayout layout) {
  std::lock_guard<std::mutex> lock(global().mu);
  global().layout = layout;
}
void set_conv_profile(bool on) {
  std::lock_guard<std::mutex> lock(global().mu);
  global().profile = on;
  for (auto& [k, e] : cache()) {
    e->t_in = e->t_prim = e->t_out = 0;
    e->calls = 0;
  }
  gemm_times().clear();
}
void print_conv_profile(int steps) {
  std::lock_guard<std::mutex> lock(global().mu);
  std::vector<Entry*> v;
  for (auto& [k, e] : cache())
    if (e->calls) v.push_back(e.get());
  std::sort(v.begin(), v.end(),
            [](Entry* a, Entry* b) { return a->t_in + a->t_prim + a->t_out > b->t_in + b->t_prim + b->t_out; });
  std::printf("\nconv profile (ms per step: reorders in, primitive, reorders out; calls per step):\n");
  for (Entry* e : v)
    std::printf("  %-52s %8.1f %8.1f %8.1f  %5.1f  %s\n", e->name.c_str(), e->t_in * 1e3 / steps,
                e->t_prim * 1e3 / steps, e->t_out * 1e3 / steps, double(e->calls) / steps,
                dnnl_pd_impl(e->prim).c_str());
  std::vector<std::pair<std::string, GemmTime>> gv(gemm_times().begin(), gemm_times().end());
  std::sort(gv.begin(), gv.end(), [](const auto& a, const auto& b) { return a.second.t > b.second.t; });
  double total = 0;
  for (const auto& [name, e] : gv) {
    std::printf("  %-52s %8s %8.1f %8s  %5.1f  dnnl_sgemm\n", name.c_str(), "", e.t * 1e3 / steps, "",
                double(e.calls) / steps);
    total += e.t;
  }
  if (!gv.empty()) std::printf("  (GEMM path, 1x1 convs through dnnl_sgemm: %.1f ms per step)\n", total * 1e3 / steps);
}
int conv_cache_size() {
  std::lock_guard<std::mutex> lock(global().mu);
  return int(cache().size());
}
}  // namespace detail

}  // namespace prsr::cpu

namespace prsr {

void cpu::set_bf16(bool enabled) {
  if (enabled && !bf16_supported()) throw Error(std::string("bf16 convolutions: ") + bf16_unsupported_reason());
  std::lock_guard<std::mutex> lock(global().mu);
  global().bf16 = enabled;  // cached primitives are keyed by it: fp32 and bf16 entries coexist
}

bool cpu::bf16_enabled() {
  std::lock_guard<std::mutex> lock(global().mu);
  return global().bf16;
}

void cpu::conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g) {
  std::lock_guard<std::mutex> lock(global().mu);
  if (gemm_1x1(Kind::ConvFwd, g)) return gemm_timed("gemm_fwd", g, [&] { conv1x1_forward(y, x, w, b, g); });
  Entry& e = lookup(Kind::ConvFwd, b != nullptr, conv_blocked(Kind::ConvFwd, g), g, conv_key, build_conv);
  if (b) e.run({x, w, b, y});
  else e.run({x, w, y});
}

void cpu::conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                          const ConvGeom& g, unsigned fresh) {
  std::lock_guard<std::mutex> lock(global().mu);
  if (gemm_1x1(Kind::ConvBwdData, g)) {
    if (dx) gemm_timed("gemm_bwd_data", g, [&] { conv1x1_backward_data(dx, dy, w, g, fresh & 1u); });
    if (dw)  // weight gradients are parameters': fresh only in tests
      gemm_timed("gemm_bwd_w", g, [&] {
        if (fresh & 2u) std::fill(dw, dw + size_t(g.co) * g.ci, 0.0f);
        conv1x1_backward_weights(dw, dy, x, g);
      });
    if (db) gemm_timed("gemm_bwd_bias", g, [&] { bias_grad(db, dy, g.n, g.co, g.ho() * g.wo(), fresh & 4u); });
    return;
  }
  Entry* ed = nullptr;
  if (dx) {
    ed = &lookup(Kind::ConvBwdData, false, conv_blocked(Kind::ConvBwdData, g), g, conv_key, build_conv);
    ed->run({dy, w, dx}, -1, nullptr, fresh);
  }
  if (dw) {
    Entry& e =
        lookup(Kind::ConvBwdWeights, db != nullptr, conv_blocked(Kind::ConvBwdWeights, g), g, conv_key, build_conv);
    // dy was just converted to the backward-data primitive's layout: when the backward-weights
    // primitive wants the same one, it reads that copy instead of converting dy again.
    const bool share =
        ed && ed->a[0].has_reorder && e.a[1].has_reorder && ed->a[0].prim.get_desc() == e.a[1].prim.get_desc();
    if (db) e.run({x, dy, dw, db}, share ? 1 : -1, share ? &ed->a[0] : nullptr, fresh);
    else e.run({x, dy, dw}, share ? 1 : -1, share ? &ed->a[0] : nullptr, fresh);
  } else if (db) {
    bias_grad(db, dy, g.n, g.co, g.ho() * g.wo(), fresh & 4u);
  }
}

void cpu::deconv2d_forward(float* y, const float* x, const float* w, const float* b, const DeconvGeom& g) {
  std::lock_guard<std::mutex> lock(global().mu);
  Entry& e = lookup(Kind::DeconvFwd, b != nullptr, deconv_blocked(Kind::DeconvFwd, g), g, deconv_key, build_deconv);
  if (b) e.run({x, w, b, y});
  else e.run({x, w, y});
}

void cpu::deconv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                            const DeconvGeom& g, unsigned fresh) {
  std::lock_guard<std::mutex> lock(global().mu);
  if (dx)
    lookup(Kind::DeconvBwdData, false, deconv_blocked(Kind::DeconvBwdData, g), g, deconv_key, build_deconv)
        .run({dy, w, dx}, -1, nullptr, fresh);
  if (dw) {
    Entry& e = lookup(Kind::DeconvBwdWeights, db != nullptr, deconv_blocked(Kind::DeconvBwdWeights, g), g, deconv_key,
                      build_deconv);
    if (db) e.run({x, dy, dw, db}, -1, nullptr, fresh);
    else e.run({x, dy, dw}, -1, nullptr, fresh);
  } else if (db) {
    bias_grad(db, dy, g.n, g.co, g.ho() * g.wo(), fresh & 4u);
  }
}

}  // namespace prsr
