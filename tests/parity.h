// Shared pieces of the backend parity suite (test_parity.cpp): which backend is under test, the
// random inputs, the tolerances of float sums, and the masked + fresh backward check.
//
// test_parity.cpp is compiled once per float32 backend, with -DPRSR_PARITY_DEVICE=Cpu (into
// unit_tests) or -DPRSR_PARITY_DEVICE=Cuda (into gpu_tests). `be` names that backend's kernels
// (engine/backend.h), DBuf<T> its memory; the reference (engine/ref/kernels.h) runs in double.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/ref/kernels.h"
#include "tests/device_buf.h"
#include "tests/expect.h"

#ifndef PRSR_PARITY_DEVICE
#error "compile test_parity.cpp with -DPRSR_PARITY_DEVICE=Cpu or -DPRSR_PARITY_DEVICE=Cuda"
#endif
#define PRSR_PARITY_CAT_(a, b) a##b
#define PRSR_PARITY_CAT(a, b) PRSR_PARITY_CAT_(a, b)
#define PRSR_PARITY_IS_CUDA_Cpu 0
#define PRSR_PARITY_IS_CUDA_Cuda 1
#define PRSR_PARITY_NAME_Cpu "parity[cpu] "
#define PRSR_PARITY_NAME_Cuda "parity[cuda] "
// 1 when the backend under test is CUDA (usable in #if)
#define PRSR_PARITY_ON_CUDA PRSR_PARITY_CAT(PRSR_PARITY_IS_CUDA_, PRSR_PARITY_DEVICE)
// A test case name with the backend's prefix: PARITY("conv2d") -> "parity[cpu] conv2d".
#define PARITY(name) PRSR_PARITY_CAT(PRSR_PARITY_NAME_, PRSR_PARITY_DEVICE) name

namespace parity {

using namespace prsr;
using Vec = std::vector<float>;
using DVec = std::vector<double>;

constexpr Device kDevice = Device::PRSR_PARITY_DEVICE;
constexpr bool kCuda = kDevice == Device::Cuda;
static_assert(kCuda == bool(PRSR_PARITY_ON_CUDA), "PRSR_PARITY_DEVICE is Cpu or Cuda");
#if PRSR_PARITY_ON_CUDA
namespace be = ::prsr::cuda;
#else
namespace be = ::prsr::cpu;
#endif
template <class T>
using DBuf = Buf<T, kDevice>;
using FBuf = DBuf<float>;

// Whether the backend can run here (the CPU always; CUDA with a device). The cases are skipped
// otherwise, after gpu_ok()'s visible line.
inline bool backend_ok() { return kCuda ? gpu_ok() : true; }

// A tolerance that differs by backend, where the CUDA kernels (libm, reduction order) were
// measured against a looser bound than the CPU's: the CPU's value, then CUDA's.
constexpr double tol(double cpu, double cuda) { return kCuda ? cuda : cpu; }

// One seeded stream for the whole suite.
inline std::mt19937& rng() {
  static std::mt19937 g(20240611u);
  return g;
}

// Uniform in [lo, hi), never exactly zero (a zero hides a missing product or accumulation).
inline Vec rnd(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  Vec v(n);
  for (auto& x : v) {
    x = u(rng());
    if (x == 0.0f) x = 0.5f * hi;
  }
  return v;
}

inline std::vector<uint8_t> rnd_u8(size_t n) {
  std::uniform_int_distribution<int> u(0, kLevels - 1);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = uint8_t(u(rng()));
  return v;
}

inline DVec to_d(const Vec& v) { return DVec(v.begin(), v.end()); }
inline Vec to_f(const DVec& v) { return Vec(v.begin(), v.end()); }

// A fresh gradient buffer (backend.h): garbage the kernel must overwrite, never read. NaN, so
// that any element read or left unwritten fails the comparison.
inline Vec garbage(size_t n) { return Vec(n, std::nanf("")); }

// Float error of a dot product of length k with entries of size ~1: ~ sqrt(k) * eps typically,
// k * eps at worst; allow the worst with margin.
inline double dot_tol(long k) { return 2e-6 * double(k) + 1e-5; }

inline std::string str(const ConvGeom& g) {
  char b[160];
  std::snprintf(b, sizeof b, "n%d %d->%d %dx%d k%dx%d pad t%d b%d l%d r%d", g.n, g.ci, g.co, g.h, g.w, g.kh, g.kw,
                g.pad_t, g.pad_b, g.pad_l, g.pad_r);
  return b;
}
inline std::string str(const DeconvGeom& g) {
  char b[160];
  std::snprintf(b, sizeof b, "n%d %d->%d %dx%d k%d s%d p%d op%d", g.n, g.ci, g.co, g.h, g.w, g.k, g.stride, g.pad,
                g.out_pad);
  return b;
}

// The backward of a convolution-like op with gradients dx [nx], dw [nw], db [nb] (db only with
// a bias), against the double reference, from the caller's dy. First accumulating into random
// gradients: the reference once with every gradient (each is computed independently of the
// others), then the backend with each mask of dx, dw, db present or null. Then fresh gradients
// (backend.h): NaN-filled, overwritten, equal to the reference's from zero; fresh 1 (dx fresh,
// dw and db accumulating into zeros) and 7 (all fresh).
//   run(dx, dw, db, fresh): the backend, pointers in its memory (FBuf).
//   ref(dx, dw, db):        the reference in double, accumulating.
struct GradTols {
  double dx, dw, db;
};
template <class Run, class Ref>
void backward_parity(const std::string& op, const std::string& tag, size_t nx, size_t nw, size_t nb, bool bias,
                     GradTols tol, Run run, Ref ref) {
  const Vec dx0 = rnd(nx), dw0 = rnd(nw), db0 = rnd(nb);
  DVec dx_r = to_d(dx0), dw_r = to_d(dw0), db_r = to_d(db0);
  ref(dx_r.data(), dw_r.data(), db_r.data());
  for (int mask = 1; mask < 8; ++mask) {
    if (!bias && (mask & 4)) continue;
    const bool hx = mask & 1, hw = mask & 2, hb = mask & 4;
    FBuf dx(dx0), dw(dw0), db(db0);
    run(hx ? dx.p : nullptr, hw ? dw.p : nullptr, hb ? db.p : nullptr, 0u);
    const std::string m = " [" + std::string(hx ? "dx" : "--") + (hw ? "dw" : "--") + (hb ? "db" : "--") + "]";
    if (hx) expect_close(op + " dx " + tag + m, dx.get(), dx_r, tol.dx, 1e-4);
    if (hw) expect_close(op + " dw " + tag + m, dw.get(), dw_r, tol.dw, 1e-4);
    if (hb) expect_close(op + " db " + tag + m, db.get(), db_r, tol.db, 1e-4);
  }
  DVec fx_r(nx, 0.0), fw_r(nw, 0.0), fb_r(nb, 0.0);
  ref(fx_r.data(), fw_r.data(), fb_r.data());
  for (unsigned fresh : {1u, 7u}) {
    FBuf dx(garbage(nx)), dw(fresh & 2u ? garbage(nw) : Vec(nw, 0.0f)), db(fresh & 4u ? garbage(nb) : Vec(nb, 0.0f));
    run(dx.p, dw.p, bias ? db.p : nullptr, fresh);
    const std::string m = " [fresh " + std::to_string(fresh) + "]";
    expect_close(op + " dx " + tag + m, dx.get(), fx_r, tol.dx, 1e-4);
    expect_close(op + " dw " + tag + m, dw.get(), fw_r, tol.dw, 1e-4);
    if (bias) expect_close(op + " db " + tag + m, db.get(), fb_r, tol.db, 1e-4);
  }
}

}  // namespace parity
