#include "engine/backend.h"

namespace prsr {

const char* device_name(Device d) {
  switch (d) {
    case Device::Ref: return "ref";
    case Device::Cpu: return "cpu";
    case Device::Cuda: return "cuda";
  }
  return "unknown";
}

}  // namespace prsr
