#include "study/answers.h"

#include <sqlite3.h>

#include <filesystem>
#include <system_error>

#include "engine/error.h"

namespace prsr::study {

namespace {

const char* const kSchema =
    "CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS answers ("
    "  id INTEGER PRIMARY KEY,"
    "  rater TEXT NOT NULL,"
    "  pair INTEGER NOT NULL,"
    "  method TEXT NOT NULL,"
    "  temperature TEXT,"
    "  real_side TEXT NOT NULL CHECK (real_side IN ('left', 'right')),"
    "  choice TEXT NOT NULL CHECK (choice IN ('left', 'right')),"
    "  fooled INTEGER NOT NULL CHECK (fooled IN (0, 1)),"
    "  response_ms INTEGER NOT NULL,"
    "  created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    "  UNIQUE (rater, pair));";

// A prepared statement, finalised on scope exit.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt(sqlite3* db, const char* sql, const std::string& path) {
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) throw Error(path + ": " + sqlite3_errmsg(db));
  }
  ~Stmt() { sqlite3_finalize(s); }
  void text(int i, const std::string& v) { sqlite3_bind_text(s, i, v.c_str(), int(v.size()), SQLITE_TRANSIENT); }
  std::string col(int i) {
    const unsigned char* t = sqlite3_column_text(s, i);
    return t ? reinterpret_cast<const char*>(t) : "";
  }
};

}  // namespace

AnswerDb::AnswerDb(const std::string& path, const std::string& manifest_id, bool create) : path_(path) {
  std::error_code ec;
  if (!create && !std::filesystem::exists(path, ec))
    throw Error(path + ": no answers yet (the database is made by study serve on its first start)");
  const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(path + ": cannot open the answer database: " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);  // a report reading while serve writes
  char* err = nullptr;
  const std::string setup = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") + kSchema;
  if (sqlite3_exec(db_, setup.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(path + ": " + msg);
  }
  // The manifest this database belongs to: recorded on first use, checked afterwards.
  Stmt ins(db_, "INSERT OR IGNORE INTO study (key, value) VALUES ('manifest', ?1)", path_);
  ins.text(1, manifest_id);
  sqlite3_step(ins.s);
  Stmt get(db_, "SELECT value FROM study WHERE key = 'manifest'", path_);
  const std::string stored = sqlite3_step(get.s) == SQLITE_ROW ? get.col(0) : "";
  if (stored != manifest_id) {
    // close_v2: `ins` and `get` are finalised only at scope exit; a plain close would fail
    // (SQLITE_BUSY) and leak the connection.
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(path + ": these answers belong to another manifest (id " + stored + ", this study's is " + manifest_id +
                "); move the database away or use the original manifest");
  }
}

AnswerDb::~AnswerDb() {
  if (db_) sqlite3_close_v2(db_);  // the last connection checkpoints the WAL into the main file
}

bool AnswerDb::insert(const Answer& a) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt st(db_,
          "INSERT INTO answers (rater, pair, method, temperature, real_side, choice, fooled, response_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
          path_);
  st.text(1, a.rater);
  sqlite3_bind_int(st.s, 2, a.pair);
  st.text(3, a.method);
  if (a.temperature.empty()) sqlite3_bind_null(st.s, 4);
  else st.text(4, a.temperature);
  st.text(5, a.real_side);
  st.text(6, a.choice);
  sqlite3_bind_int(st.s, 7, a.fooled ? 1 : 0);
  sqlite3_bind_int64(st.s, 8, a.response_ms);
  const int rc = sqlite3_step(st.s);
  if (rc == SQLITE_DONE) return true;
  if (sqlite3_extended_errcode(db_) == SQLITE_CONSTRAINT_UNIQUE) return false;
  throw Error(path_ + ": cannot store the answer: " + sqlite3_errmsg(db_));
}

std::vector<Answer> AnswerDb::all() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt st(db_,
          "SELECT rater, pair, method, temperature, real_side, choice, fooled, response_ms, created "
          "FROM answers ORDER BY id",
          path_);
  std::vector<Answer> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    Answer a;
    a.rater = st.col(0);
    a.pair = sqlite3_column_int(st.s, 1);
    a.method = st.col(2);
    a.temperature = st.col(3);
    a.real_side = st.col(4);
    a.choice = st.col(5);
    a.fooled = sqlite3_column_int(st.s, 6) != 0;
    a.response_ms = long(sqlite3_column_int64(st.s, 7));
    a.created = st.col(8);
    out.push_back(std::move(a));
  }
  if (rc != SQLITE_DONE) throw Error(path_ + ": cannot read the answers: " + sqlite3_errmsg(db_));
  return out;
}

std::set<int> AnswerDb::answered(const std::string& rater) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt st(db_, "SELECT pair FROM answers WHERE rater = ?1", path_);
  st.text(1, rater);
  std::set<int> out;
  while (sqlite3_step(st.s) == SQLITE_ROW) out.insert(sqlite3_column_int(st.s, 0));
  return out;
}

long AnswerDb::count() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt st(db_, "SELECT COUNT(*) FROM answers", path_);
  return sqlite3_step(st.s) == SQLITE_ROW ? long(sqlite3_column_int64(st.s, 0)) : 0;
}

}  // namespace prsr::study
