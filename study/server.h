// study serve: the rating page and its small JSON API over cpp-httplib (docs/study.md).
//
//   GET  /                 the page (study/page.h); sets the rater cookie when missing
//   GET  /api/next         the rater's next unanswered pair in their order (study/pairing.h)
//   GET  /api/image?pair=P&side=left|right   the PNG shown on that side for this rater
//   POST /api/answer       pair=P&choice=left|right&ms=N (form-encoded): 200 once committed,
//                          409 when this rater already answered P (the first answer stands)
//
// Errors are JSON {"error": "..."} with 400 (malformed), 404 (unknown pair or path) or 409;
// an exception in a handler is a 500, never a crash. Image URLs name the pair and the side,
// never the method or which image is real.
#pragma once
#include "study/options.h"

namespace prsr::study {

// Reads and checks DIR (manifest, every PNG), opens the database, binds, prints
// "serving http://ADDR:PORT/", serves until SIGINT or SIGTERM, then closes the database.
int run_serve(const ServeArgs& a);

}  // namespace prsr::study
