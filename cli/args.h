// Flag values shared by the command lines of ./build/sample and ./build/study (both throw
// prsr::Error with the flag's name; train/options.cpp has its own UsageError parsers).
#pragma once
#include <string>
#include <vector>

namespace prsr::cli {

// An integer in [lo, hi], else an Error naming `flag`.
long parse_int(const std::string& flag, const std::string& v, long lo, long hi);
// "T[,T2..]": distinct finite numbers > 0, else an Error naming --temperature (a temperature
// given twice would write the same files twice).
std::vector<float> parse_temperatures(const std::string& v);
// "1.0", "0.9", "1e-05": %g with ".0" added to whole numbers (file and folder names, tables).
std::string fmt_temperature(float t);

}  // namespace prsr::cli
