// The machine's convolution peak that the benchmarks compare against: oneDNN's own 3x3 conv,
// forward, N=32, 64->64, 32x32, pad 1, best format. The fastest of 30 calls: on a shared VM the
// median swings with other guests' load (seen: 101-150 GFLOP/s within minutes), the best call
// is what the cores can do. Used by bench_train and bench_sampler (bench_ops prints its own,
// with the implementation name and CPU time).
#pragma once

#include <algorithm>
#include <chrono>
#include <oneapi/dnnl/dnnl.hpp>

namespace prsr::bench {

inline double conv_peak_gflops() {
  using namespace dnnl;
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  const memory::dim N = 32, C = 64, H = 32;
  memory::desc src({N, C, H, H}, memory::data_type::f32, memory::format_tag::any);
  memory::desc wei({C, C, 3, 3}, memory::data_type::f32, memory::format_tag::any);
  memory::desc dst({N, C, H, H}, memory::data_type::f32, memory::format_tag::any);
  convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src, wei, dst, {1, 1},
                              {1, 1}, {1, 1});
  convolution_forward::primitive_desc pd(d, eng);
  memory ms(pd.src_desc(), eng), mw(pd.weights_desc(), eng), md(pd.dst_desc(), eng);
  std::fill_n(static_cast<float*>(ms.get_data_handle()), pd.src_desc().get_size() / 4, 0.5f);
  std::fill_n(static_cast<float*>(mw.get_data_handle()), pd.weights_desc().get_size() / 4, 0.01f);
  convolution_forward conv(pd);
  auto run = [&] {
    conv.execute(s, {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}});
    s.wait();
  };
  for (int i = 0; i < 3; ++i) run();
  double best = 1e9;
  for (int i = 0; i < 30; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * N * C * C * 9 * H * H / best / 1e9;
}

}  // namespace prsr::bench
