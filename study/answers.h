// The answer database of a study: DIR/answers.sqlite (docs/study.md has the schema).
//
// WAL journal, synchronous=FULL: every insert is its own transaction, and insert() returns only
// after the commit is on disk, so an answer acknowledged to the page survives a killed server
// (and a power cut). One connection, serialised by a mutex: raters click seconds apart, an
// fsync per answer is nothing.
#pragma once
#include <mutex>
#include <set>
#include <string>
#include <vector>

struct sqlite3;

namespace prsr::study {

struct Answer {
  std::string rater;        // 32 hex digits, from the rater's cookie
  int pair = 0;             // manifest pair id
  std::string method;       // copied from the manifest: "prsr" | "l2" | "bicubic"
  std::string temperature;  // "1.0"... or "" (NULL in the database) for l2 and bicubic
  std::string real_side;    // "left" | "right": where the real image was shown
  std::string choice;       // "left" | "right": the image the rater picked as real
  bool fooled = false;      // choice != real_side: the model's output was picked as real
  long response_ms = 0;     // from the choice buttons appearing to the click
  std::string created;      // UTC time of the insert, ISO 8601 (set by the database)
};

class AnswerDb {
 public:
  // Opens DIR/answers.sqlite for the study whose manifest has id `manifest_id` (manifest.h).
  // create: make the file and the schema when missing (serve); otherwise a missing file is an
  // Error (report: "no answers yet"). An Error too when the file belongs to another manifest or
  // is not an SQLite database.
  AnswerDb(const std::string& path, const std::string& manifest_id, bool create);
  ~AnswerDb();
  AnswerDb(const AnswerDb&) = delete;
  AnswerDb& operator=(const AnswerDb&) = delete;

  // Stores one answer, committed when it returns true. false: this rater already answered this
  // pair (UNIQUE(rater, pair)); the first answer stands and nothing is written.
  bool insert(const Answer& a);
  std::vector<Answer> all();                         // in insertion order
  std::set<int> answered(const std::string& rater);  // pair ids this rater has answered
  long count();

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
  std::mutex mu_;
};

}  // namespace prsr::study
