// Branch-free float32 exp / tanh / sigmoid that GCC vectorises inside `omp simd` loops (glibc's
// expf and tanhf are scalar calls unless -ffast-math). Cephes-style range reduction and
// polynomials; max relative error about 2 ulp over the range the model uses.
//   exp:  x = n ln2 + r, |r| <= ln2/2, e^x = 2^n * P(r). Input clamped to [-87.3, 88.3], so
//         the result is always finite and normal (no inf, no denormals).
//   tanh: |x| < 0.625: x + x^3 Q(x^2) (no cancellation near 0); else 1 - 2 / (e^{2|x|} + 1).
//   sigmoid: 1 / (1 + e^{-x}).
#pragma once
#include <cmath>
#include <cstdint>

namespace prsr::cpu::simd {

// exp's constants (also model/sampler_chain.h's 8-lane copy of exp, which must match it).
namespace exp_constants {
constexpr float kLo = -87.3f, kHi = 88.3f;                        // the input's clamp
constexpr float kLog2e = 1.44269504088896341f;                    // n = floor(x log2(e) + 1/2)
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln2 split in two (Cephes C1, C2)
constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                         4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};  // P(r), highest first
}  // namespace exp_constants

inline float exp(float x) {
  using namespace exp_constants;
  x = x < kLo ? kLo : (x > kHi ? kHi : x);
  const float n = std::floor(x * kLog2e + 0.5f);
  float r = x - n * kLn2Hi;  // an exact reduction
  r = r - n * kLn2Lo;
  float p = kP[0];
  for (int i = 1; i < 6; ++i) p = p * r + kP[i];
  const float e = p * r * r + r + 1.0f;
  // 2^n, n in [-126, 127]; unsigned so that a NaN input (n = NaN) shifts without UB and the
  // NaN still propagates through e.
  const uint32_t bits = uint32_t(int32_t(n) + 127) << 23;
  return e * __builtin_bit_cast(float, bits);
}

inline float tanh(float x) {
  const float ax = std::fabs(x);
  const float e = simd::exp(2.0f * ax);
  const float big = 1.0f - 2.0f / (e + 1.0f);
  const float z = x * x;
  const float q =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
       3.33332819422e-1f);
  const float small = q * z * x + x;
  return ax > 0.625f ? std::copysign(big, x) : small;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + simd::exp(-x)); }

}  // namespace prsr::cpu::simd
