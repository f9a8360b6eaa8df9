// Run-time detection of the CPU's bf16 instructions for the opt-in bf16 convolutions
// (engine/backend.h). oneDNN runs bf16 convolutions natively with AVX512_BF16 (Cooper Lake, Zen 4
// and later) or AMX-BF16 (Sapphire Rapids and later); on other AVX-512 CPUs it would emulate them
// (slower than fp32), and on AVX2 CPUs it has no bf16 convolution at all. prsr therefore asks the
// CPU itself and refuses bf16 with a clear message instead of running an emulation.
#include <cpuid.h>

#include <cstdint>
#include <string>

#include "engine/backend.h"

namespace prsr::cpu {

namespace {

struct Bf16Isa {
  bool avx512f = false, avx512_bf16 = false, amx_bf16 = false, amx_tile = false;
  bool os_avx512 = false, os_amx = false;  // the OS saves the registers (XCR0)
  bool usable() const { return (avx512f && avx512_bf16 && os_avx512) || (amx_bf16 && amx_tile && os_amx); }
};

uint64_t xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

Bf16Isa detect() {
  Bf16Isa r;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return r;
  const bool osxsave = c & (1u << 27);
  if (__get_cpuid_max(0, nullptr) < 7) return r;
  __cpuid_count(7, 0, a, b, c, d);
  r.avx512f = b & (1u << 16);
  r.amx_bf16 = d & (1u << 22);
  r.amx_tile = d & (1u << 24);
  const unsigned max_sub = a;
  if (max_sub >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    r.avx512_bf16 = a & (1u << 5);
  }
  if (osxsave) {
    const uint64_t x = xcr0();
    r.os_avx512 = (x & 0xe6) == 0xe6;               // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
    r.os_amx = (x & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA
  }
  return r;
}

const Bf16Isa& isa() {
  static const Bf16Isa r = detect();
  return r;
}

}  // namespace

bool bf16_supported() { return isa().usable(); }

const char* bf16_unsupported_reason() {
  static const std::string reason = [] {
    const Bf16Isa& i = isa();
    if (i.usable()) return std::string();
    std::string s = "this CPU has neither AVX512_BF16 nor AMX-BF16 (";
    s += i.avx512f ? "AVX-512F: yes" : "AVX-512F: no";
    s += i.avx512_bf16 ? ", AVX512_BF16: yes" : ", AVX512_BF16: no";
    s += i.amx_bf16 ? ", AMX-BF16: yes" : ", AMX-BF16: no";
    if ((i.avx512f && i.avx512_bf16 && !i.os_avx512) || (i.amx_bf16 && !i.os_amx))
      s += "; the operating system does not enable their registers";
    s += "); bf16 training and sampling need one of them (fp32 runs everywhere: --precision fp32)";
    return s;
  }();
  return reason.c_str();
}

}  // namespace prsr::cpu
