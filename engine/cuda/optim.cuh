// Optimiser steps of the CUDA backend (engine/cuda/optim.cu) over one flat parameter arena, one
// thread per parameter. Semantics: ref::rmsprop_step (TensorFlow's RMSProp) and ref::adam_step
// (bias-corrected Adam). Adam's bias corrections 1 - beta^t are computed once on the host in
// float, exactly as ref does, and passed to the kernel.
#pragma once
#include "engine/cuda/common.cuh"
