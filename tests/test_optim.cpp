// Optimiser steps against values computed by hand (docs/design.md 1.3), on the reference and CPU
// backends, through the Optimizer class over a ParamSet.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/optim.h"

using namespace prsr;

namespace {

// Two parameters, three steps with fixed gradients; returns the trajectory of w[0], w[1].
template <class T>
std::vector<std::vector<double>> run(Device dev, const OptimConfig& oc, const double g[3][2]) {
  ParamSet<T> ps(dev);
  Tensor<T>* w = ps.declare("w", {2, 1, 1, 1});
  ps.declare("buffer", {1, 1, 1, 1}, false);  // never updated
  ps.allocate();
  ps.upload({T(1.0), T(-2.0), T(7.0)});
  Optimizer<T> opt(oc, ps);
  std::vector<std::vector<double>> traj;
  for (int s = 0; s < 3; ++s) {
    std::vector<T> gh = {T(g[s][0]), T(g[s][1])};
    device_upload(dev, ps.grad(), gh.data(), 2 * sizeof(T));
    opt.step(s);
    auto h = ps.download();
    traj.push_back({double(h[0]), double(h[1]), double(h[2])});
  }
  (void)w;
  return traj;
}

const double kGrads[3][2] = {{0.5, -1.0}, {0.25, 2.0}, {-1.0, 0.0}};

}  // namespace

TEST_CASE("optim: RMSProp (TensorFlow definition, ms starts at 1) matches hand-computed steps") {
  OptimConfig oc;  // lr 4e-4, decay 0.95, momentum 0.9, eps 1e-8
  // By hand, parameter 0 (w = 1):
  //  step 1: g = 0.5:  ms = 0.95*1 + 0.05*0.25 = 0.9625; mom = 4e-4*0.5/sqrt(0.9625+1e-8)
  //                    = 2.0385887e-4; w = 0.99979614113
  //  step 2: g = 0.25: ms = 0.95*0.9625 + 0.05*0.0625 = 0.917500; mom = 0.9*2.0385887e-4 +
  //                    4e-4*0.25/sqrt(0.9175) = 1.8347298e-4 + 1.0439932e-4 = 2.8787230e-4;
  //                    w = 0.99950826883
  //  step 3: g = -1:   ms = 0.95*0.9175 + 0.05*1 = 0.921625; mom = 0.9*2.8787230e-4 +
  //                    4e-4*(-1)/sqrt(0.921625) = 2.5908507e-4 - 4.1666486e-4 = -1.5757979e-4;
  //                    w = 0.99966584862
  // (The intermediates above are rounded to 8 digits; the constants are the same recurrences
  // carried without rounding.)
  const double w0[3] = {0.99979614112448, 0.99950826898689, 0.99966584507618};
  // Parameter 1 (w = -2), step 1: g = -1: ms = 0.95 + 0.05 = 1.0; mom = -4e-4/sqrt(1 + 1e-8);
  // w = -2 + 3.99999998e-4 = -1.999600000002
  for (Device dev : {Device::Ref, Device::Cpu}) {
    auto t = run<float>(dev, oc, kGrads);
    for (int s = 0; s < 3; ++s) CHECK(t[s][0] == doctest::Approx(w0[s]).epsilon(1e-7));
    CHECK(t[0][1] == doctest::Approx(-1.999600000002).epsilon(1e-7));
    CHECK(t[2][2] == 7.0);  // buffers are not trained
  }
  auto td = run<double>(Device::Ref, oc, kGrads);
  for (int s = 0; s < 3; ++s) CHECK(td[s][0] == doctest::Approx(w0[s]).epsilon(1e-10));
}

TEST_CASE("optim: Adam (bias-corrected) matches hand-computed steps") {
  OptimConfig oc;
  oc.kind = "adam";
  oc.lr = 1e-2f;
  // Parameter 0 (w = 1), beta1 0.9, beta2 0.999, eps 1e-8:
  //  step 1: g = 0.5:  m = 0.05, v = 0.00025; mhat = 0.5, vhat = 0.25; w -= 0.01*0.5/(0.5+1e-8)
  //                    -> 0.99000000002
  //  step 2: g = 0.25: m = 0.045 + 0.025 = 0.07; v = 0.00024975 + 0.0000625 = 0.00031225;
  //                    mhat = 0.07/0.19 = 0.36842105; vhat = 0.00031225/0.001999 = 0.15620310;
  //                    w -= 0.01*0.36842105/(0.39522538+1e-8) = 0.0093217977 -> 0.98067820232
  //  step 3: g = -1:   m = 0.063 - 0.1 = -0.037; v = 0.00031193775 + 0.001 = 0.00131193775;
  //                    mhat = -0.037/0.271 = -0.13653137; vhat = 0.00131193775/0.002997001
  //                    = 0.43774686; w -= 0.01*(-0.13653137)/(0.66162441+1e-8)
  //                    = -0.0020635722 -> 0.98274177452
  // (Intermediates rounded above; the constants carry the recurrences without rounding.)
  const double w0[3] = {0.99000000020000, 0.98067820404775, 0.98274177428854};
  for (Device dev : {Device::Ref, Device::Cpu}) {
    auto t = run<float>(dev, oc, kGrads);
    for (int s = 0; s < 3; ++s) CHECK(t[s][0] == doctest::Approx(w0[s]).epsilon(2e-7));
  }
  auto td = run<double>(Device::Ref, oc, kGrads);
  for (int s = 0; s < 3; ++s) CHECK(td[s][0] == doctest::Approx(w0[s]).epsilon(1e-9));
}

TEST_CASE("optim: the learning rate halves every halve_every steps; unknown optimisers are refused") {
  OptimConfig oc;
  oc.halve_every = 10;
  ParamSet<float> ps(Device::Ref);
  ps.declare("w", {1, 1, 1, 1});
  ps.allocate();
  Optimizer<float> opt(oc, ps);
  CHECK(opt.lr_at(0) == doctest::Approx(4e-4));
  CHECK(opt.lr_at(9) == doctest::Approx(4e-4));
  CHECK(opt.lr_at(10) == doctest::Approx(2e-4));
  CHECK(opt.lr_at(25) == doctest::Approx(1e-4));
  OptimConfig bad;
  bad.kind = "sgd";
  CHECK_THROWS_AS(Optimizer<float>(bad, ps), Error);
}
