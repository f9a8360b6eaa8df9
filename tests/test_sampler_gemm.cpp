// The cached sampler's small products (model/sampler_gemm.h) against a double-precision reference
// on random inputs: every panel width (1 to kRowNV and kWideNV vectors, the last panel narrower:
// 1 to kWideNV), rows from 1 to past one row block, the dense and the sparse (kidx) forms, whole
// products, a share of the tiles and single panels, products with per-row sums added
// (gemm_init), and one row through a RowProduct; and the fused gated layer of sampler_chain.h.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "model/sampler_chain.h"
#include "model/sampler_gemm.h"

using namespace prsr;

namespace {

struct Case {
  int M, K, N, nv;
};

// C = bias + A x B (A: M x lda, using columns cols[0..nk) paired with B's rows rows[0..nk)).
std::vector<double> reference(const std::vector<float>& A, int lda, int M, const std::vector<float>& B, int N,
                              const std::vector<float>& bias, const std::vector<int>& rows) {
  std::vector<double> C(size_t(M) * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = bias[size_t(n)];
      for (size_t j = 0; j < rows.size(); ++j) s += double(A[size_t(m) * lda + j]) * B[size_t(rows[j]) * N + n];
      C[size_t(m) * N + n] = s;
    }
  return C;
}

// max |c - ref| / (sum_k |a_k b_k| + |bias|): within float rounding of the sum.
void check_close(const std::vector<float>& C, long ldc, const std::vector<double>& ref, int M, int N, double scale) {
  double worst = 0;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) worst = std::max(worst, std::fabs(C[size_t(m) * ldc + n] - ref[size_t(m) * N + n]));
  CHECK(worst <= 1e-5 * scale);
}

}  // namespace

TEST_CASE("sampler_gemm: products of every panel width and row count equal a double reference") {
  using namespace sampler_gemm;
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  const int V = kVec;
  std::vector<Case> cases;
  for (int nv : {1, 2, 3, 4, kWideNV})
    for (int N : {1, V - 1, V, V + 3, 2 * V, 2 * V + 6, 3 * V, 4 * V - 1, 4 * V + 5, 5 * V + 2, 6 * V + 1, 8 * V,
                  11 * V + 5, 16 * V + 3})
      for (int K : {1, 3, 7, 22, 75})
        for (int M : {1, 2, 5, kMR + 3}) {
          if (nv > kNV && M > 1) continue;  // wider panels: one row
          cases.push_back({M, K, N, nv});
        }
  int checked = 0, row_products = 0;
  for (const Case& c : cases) {
    INFO("M " << c.M << " K " << c.K << " N " << c.N << " nv " << c.nv);
    std::vector<float> B(size_t(c.K) * c.N), bias(size_t(c.N));
    for (float& v : B) v = U(rng);
    for (float& v : bias) v = U(rng);
    const Packed P = pack(
        c.K, c.N, [&](int k, int n) { return B[size_t(k) * c.N + n]; }, [&](int n) { return bias[size_t(n)]; }, c.nv);
    REQUIRE(P.cols() >= c.N);
    REQUIRE(P.cols() < c.N + V);  // padded to whole vectors only
    const int lda = c.K + 3, ldc = P.cols() + 2;
    std::vector<float> A(size_t(c.M) * lda);
    for (float& v : A) v = U(rng);
    std::vector<int> all(size_t(c.K));
    for (int k = 0; k < c.K; ++k) all[size_t(k)] = k;
    const auto ref = reference(A, lda, c.M, B, c.N, bias, all);
    const double scale = 1.0 + c.K;
    // Whole product; then two workers' shares; then panel by panel.
    std::vector<float> C(size_t(c.M) * ldc, 7.f);
    gemm(A.data(), lda, c.M, P, C.data(), ldc);
    check_close(C, ldc, ref, c.M, c.N, scale);
    CHECK(C[size_t(c.M - 1) * ldc + c.N] == 7.f);  // nothing past N is written
    std::fill(C.begin(), C.end(), 7.f);
    for (int tid = 0; tid < 2; ++tid) gemm(A.data(), lda, c.M, P, C.data(), ldc, tid, 2);
    check_close(C, ldc, ref, c.M, c.N, scale);
    std::fill(C.begin(), C.end(), 7.f);
    for (int q = 0; q < P.panels(); ++q) gemm_panel(q, A.data(), lda, c.M, P, C.data(), ldc);
    check_close(C, ldc, ref, c.M, c.N, scale);
    // Sparse: every other input left out (A holds only the kept ones, in order).
    std::vector<int> kept;
    for (int k = 0; k < c.K; k += 2) kept.push_back(k);
    std::vector<float> As(size_t(c.M) * lda);
    for (int m = 0; m < c.M; ++m)
      for (size_t j = 0; j < kept.size(); ++j) As[size_t(m) * lda + j] = A[size_t(m) * lda + size_t(kept[j])];
    const auto refs = reference(As, lda, c.M, B, c.N, bias, kept);
    std::fill(C.begin(), C.end(), 7.f);
    gemm(As.data(), lda, c.M, P, C.data(), ldc, 0, 1, kept.data(), int(kept.size()));
    check_close(C, ldc, refs, c.M, c.N, scale);
    // Started from per-row sums (gemm_init): init + bias + A x B; init rows are read in whole
    // panels (ldi >= cols), C is written only up to N.
    const int ldi = P.cols() + 5;
    std::vector<float> I(size_t(c.M) * ldi);
    for (float& v : I) v = U(rng);
    auto refi = ref;
    for (int m = 0; m < c.M; ++m)
      for (int n = 0; n < c.N; ++n) refi[size_t(m) * c.N + n] += I[size_t(m) * ldi + n];
    std::fill(C.begin(), C.end(), 7.f);
    gemm_init(I.data(), ldi, A.data(), lda, c.M, P, C.data(), ldc);
    check_close(C, ldc, refi, c.M, c.N, scale + 1);
    CHECK(C[size_t(c.M - 1) * ldc + c.N] == 7.f);
    // One row and one panel: the same product through a RowProduct (exactly N columns written,
    // or the panel's whole width); more panels: none.
    const RowProduct rp = row_product(P);
    CHECK(bool(rp) == (P.panels() == 1));
    if (rp && c.M == 1) {
      std::fill(C.begin(), C.end(), 7.f);
      rp(A.data(), I.data(), C.data());
      check_close(C, ldc, refi, 1, c.N, scale + 1);
      CHECK(C[size_t(c.N)] == 7.f);
      std::fill(C.begin(), C.end(), 7.f);
      rp(A.data(), nullptr, C.data(), true);
      check_close(C, ldc, ref, 1, c.N, scale);
      CHECK(long(std::count(C.begin(), C.begin() + P.cols(), 7.f)) == 0);  // the padding too
      ++row_products;
    }
    // No rows (a worker whose share of a row is empty): nothing is computed or written.
    std::fill(C.begin(), C.end(), 7.f);
    gemm(A.data(), lda, 0, P, C.data(), ldc);
    gemm_init(I.data(), ldi, A.data(), lda, 0, P, C.data(), ldc);
    for (int q = 0; q < P.panels(); ++q) gemm_panel(q, A.data(), lda, 0, P, C.data(), ldc);
    CHECK(std::count(C.begin(), C.end(), 7.f) == long(C.size()));
    ++checked;
  }
  CHECK(checked == int(cases.size()));
  CHECK(row_products >= 50);
  CHECK(checked >= 400);
}

// model/sampler_chain.h: one fused gated layer (the chain at batch 1) against a double
// reference, for every width of colour c's channels it takes (q = 1 to 16: one to four vectors of
// z, the sigmoid half starting at every lane) and where they start (g0: the earlier colours'
// channels read from the rows). Only colour c's channels of the gate row and of h' are written.
TEST_CASE("sampler_chain: a fused gated layer equals a double reference") {
  using sampler_chain::GatedStep;
  if (!sampler_chain::kAvailable) {
    MESSAGE("skipped: this build targets no AVX2 + FMA (-Dnative=false); the sampler runs the unfused products");
    return;
  }
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  int checked = 0;
  for (int q = 1; q <= sampler_chain::kMaxQ; ++q)
    for (int g0 : {0, 3, 11, 22}) {
      const int K = g0 + q;
      std::vector<float> wz(size_t(K) * 2 * q), wr(size_t(K) * q), br(static_cast<size_t>(q));
      for (float& v : wz) v = U(rng) * 0.5f;
      for (float& v : wr) v = U(rng) * 0.5f;
      for (float& v : br) v = U(rng);
      const GatedStep step = GatedStep::make(
          q, g0, [&](int k, int n) { return wz[size_t(k) * 2 * q + n]; },
          [&](int k, int n) { return wr[size_t(k) * q + n]; }, [&](int n) { return br[size_t(n)]; });
      REQUIRE(bool(step));
      // h: the pixel's channels (read up to g0 + 16), hpre: z's vectors; rows with room past them.
      const int room = g0 + 2 * sampler_chain::kMaxQ + 8;
      std::vector<float> h(static_cast<size_t>(room)), hpre(static_cast<size_t>(room)), gate(static_cast<size_t>(room)),
          hout(size_t(room), 7.f);
      for (float& v : h) v = U(rng);
      for (float& v : hpre) v = U(rng);
      for (float& v : gate) v = U(rng);
      const std::vector<float> gate_in = gate;
      step(h.data(), hpre.data(), gate.data(), hout.data());
      // The reference in double.
      std::vector<double> g(static_cast<size_t>(q));
      for (int i = 0; i < q; ++i) {
        double a = hpre[size_t(i)], b = hpre[size_t(q + i)];
        for (int k = 0; k < K; ++k) {
          a += double(h[size_t(k)]) * wz[size_t(k) * 2 * q + i];
          b += double(h[size_t(k)]) * wz[size_t(k) * 2 * q + q + i];
        }
        g[size_t(i)] = std::tanh(a) / (1 + std::exp(-b));
      }
      double worst = 0;
      for (int i = 0; i < q; ++i) {
        double r = double(h[size_t(g0 + i)]) + br[size_t(i)];
        for (int k = 0; k < g0; ++k) r += double(gate_in[size_t(k)]) * wr[size_t(k) * q + i];
        for (int k = 0; k < q; ++k) r += g[size_t(k)] * wr[size_t(g0 + k) * q + i];
        worst = std::max(worst, std::fabs(gate[size_t(g0 + i)] - g[size_t(i)]));
        worst = std::max(worst, std::fabs(hout[size_t(g0 + i)] - r));
      }
      CHECK(worst < 2e-5);
      // Nothing outside colour c's channels written.
      bool kept = true;
      for (int k = 0; k < room; ++k)
        if (k < g0 || k >= g0 + q) kept = kept && gate[size_t(k)] == gate_in[size_t(k)] && hout[size_t(k)] == 7.f;
      CHECK(kept);
      ++checked;
    }
  CHECK(checked == 4 * sampler_chain::kMaxQ);
  CHECK(!GatedStep::fits(sampler_chain::kMaxQ + 1));
}
