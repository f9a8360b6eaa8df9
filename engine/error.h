// One exception type for every user-facing error: its message is printed as one line
// by the binaries ("error: <message>") before a non-zero exit.
#pragma once
#include <stdexcept>
#include <string>

namespace prsr {

struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// check(cond, "message") for shape/argument checks at public entry points.
inline void check(bool cond, const std::string& msg) {
  if (!cond) throw Error(msg);
}

}  // namespace prsr

// PRSR_CHECK(cond, message-expression): the message is only built when the check fails, so
// checks on hot paths cost no allocation.
#define PRSR_CHECK(cond, msg)              \
  do {                                     \
    if (!(cond)) throw ::prsr::Error(msg); \
  } while (0)
