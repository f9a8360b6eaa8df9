// A bump allocator over a few large chunks, planned by use: the first training step allocates
// chunks as it goes; reset() rewinds, and since every later step asks for the same sizes in the
// same order, it gets the same addresses back without touching the system allocator.
// This is how the step loop allocates nothing (docs/design.md 5: a first-touch page fault costs ~8 us
// per 4 KiB page on these machines).
#pragma once
#include <cstddef>
#include <vector>

#include "engine/backend.h"

namespace prsr {

class Arena {
 public:
  explicit Arena(Device dev, size_t min_chunk_bytes = size_t(1) << 20);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  void* alloc(size_t bytes);  // 256-byte aligned, uninitialised
  void reset();               // rewind; memory is kept
  Device device() const { return dev_; }
  size_t reserved_bytes() const;                                   // sum of chunk sizes
  size_t used_bytes() const;                                       // high-water mark of the current pass
  long system_allocations() const { return system_allocations_; }  // chunks ever allocated

 private:
  struct Chunk {
    char* p;
    size_t size;
  };
  Device dev_;
  size_t min_chunk_;
  std::vector<Chunk> chunks_;
  size_t cur_ = 0, offset_ = 0, used_ = 0;
  long system_allocations_ = 0;
};

// Raw memory for a device (host memory for Ref and Cpu).
void* device_alloc(Device dev, size_t bytes);
void device_free(Device dev, void* p);
void device_upload(Device dev, void* dst, const void* src, size_t bytes);    // host -> dev
void device_download(Device dev, void* dst, const void* src, size_t bytes);  // dev -> host

}  // namespace prsr
