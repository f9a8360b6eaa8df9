// The rating page served by study serve: one HTML document with its CSS and JS inline (no
// external assets, works offline, no build step). docs/study.md describes what a rater sees.
#pragma once

namespace prsr::study {

// The page at "/": the instructions, then one trial after another, driven by /api/next,
// /api/image and /api/answer (study/server.h).
extern const char* const kPageHtml;

}  // namespace prsr::study
