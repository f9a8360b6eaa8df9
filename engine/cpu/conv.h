// Internals of the oneDNN convolutions of prsr::cpu, exposed for tools/bench_ops.cpp only
// (the engine itself calls the functions of engine/backend.h).
#pragma once

namespace prsr::cpu::detail {

// Memory layout the oneDNN primitives work in. User tensors are always plain NCHW / OIHW.
//   Plain: the primitives read and write the user buffers directly (no reorders).
//   Any:   each primitive picks its preferred (blocked) layouts; reorders at the boundaries.
//   Default: per direction and shape, the rule measured best (use_blocked() in conv.cpp).
enum class ConvLayout { Default, Plain, Any };
void set_conv_layout(ConvLayout layout);

// Per-entry timing of every conv call (reorders and primitive separately), for bench_train.
void set_conv_profile(bool on);  // also clears the counters
void print_conv_profile(int steps);

// Number of cached primitive entries (one per geometry and direction).
int conv_cache_size();

}  // namespace prsr::cpu::detail
