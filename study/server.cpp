#include "study/server.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "data/image.h"
#include "engine/error.h"
#include "study/answers.h"
#include "study/manifest.h"
#include "study/page.h"
#include "study/pairing.h"

namespace fs = std::filesystem;

namespace prsr::study {

namespace {

const char* const kCookie = "prsr_rater";

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += c;
  }
  return o;
}

void reply_error(httplib::Response& res, int status, const std::string& msg) {
  res.status = status;
  res.set_content("{\"error\": \"" + json_escape(msg) + "\"}\n", "application/json");
}

// The rater id from the Cookie header, "" when missing or not 32 hex digits.
std::string rater_of(const httplib::Request& req) {
  const std::string cookies = req.get_header_value("Cookie");
  const std::string key = std::string(kCookie) + "=";
  size_t pos = 0;
  while (pos < cookies.size()) {
    while (pos < cookies.size() && (cookies[pos] == ' ' || cookies[pos] == ';')) ++pos;
    const size_t end = std::min(cookies.find(';', pos), cookies.size());
    const std::string item = cookies.substr(pos, end - pos);
    if (item.rfind(key, 0) == 0) {
      const std::string v = item.substr(key.size());
      return valid_rater_id(v) ? v : "";
    }
    pos = end;
  }
  return "";
}

// A non-negative integer parameter; false when missing, empty or not all digits.
bool int_param(const httplib::Request& req, const char* name, long max, long& v) {
  if (!req.has_param(name)) return false;
  const std::string s = req.get_param_value(name);
  if (s.empty() || s.size() > 10) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  v = std::strtol(s.c_str(), nullptr, 10);
  return v <= max;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Study {
  std::string dir;
  std::vector<Pair> pairs;
  std::map<std::string, std::string> png;  // relative path -> bytes, every image of the study
  int show_ms = 1000;
};

// Every image is decoded once to check it (a clear error at start, not a broken page later),
// and kept as bytes: a study is a few hundred 32x32 PNGs.
Study load_study(const ServeArgs& a) {
  Study s;
  s.dir = a.dir;
  s.show_ms = a.show_ms;
  s.pairs = read_manifest(a.dir);
  int size = -1;
  for (const Pair& p : s.pairs)
    for (const std::string* rel : {&p.real, &p.fake}) {
      if (s.png.count(*rel)) continue;
      const fs::path path = fs::path(a.dir) / *rel;
      const data::Image im = data::read_image(path.string());  // Error naming the file
      if (size < 0) size = im.w;
      if (im.w != im.h || im.w != size)
        throw Error(path.string() + ": " + std::to_string(im.w) + "x" + std::to_string(im.h) +
                    ", the study's images are " + std::to_string(size) + "x" + std::to_string(size));
      s.png[*rel] = read_file(path);
    }
  return s;
}

// SIGINT / SIGTERM are blocked in every thread and waited for by one: it stops the server from
// ordinary code (httplib's stop() is not async-signal-safe), then listen() returns in main.
void block_stop_signals(sigset_t& set) {
  std::signal(SIGINT, SIG_DFL);   // a shell's `cmd &` starts it with SIGINT ignored, and an
  std::signal(SIGTERM, SIG_DFL);  // ignored signal is discarded, never seen by sigwait
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

}  // namespace

int run_serve(const ServeArgs& a) {
  sigset_t stop_set;
  block_stop_signals(stop_set);  // before any thread exists, so they all inherit the mask
  Study study = load_study(a);
  const int P = int(study.pairs.size());
  const std::string db_path = (fs::path(a.dir) / kDatabaseName).string();
  AnswerDb db(db_path, manifest_id(a.dir), true);

  std::signal(SIGPIPE, SIG_IGN);  // a rater closing the tab mid-reply is not a crash
  httplib::Server svr;
  svr.set_keep_alive_timeout(2);
  // httplib's default also sets SO_REUSEPORT, which lets a second server bind the same port
  // and take half the requests; SO_REUSEADDR alone still allows a quick restart.
  svr.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });                                     // Ctrl-C waits at most this long for idle connections
  svr.set_payload_max_length(64 * 1024);  // an answer is a few bytes
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      reply_error(res, 500, std::string("internal error: ") + e.what());
    } catch (...) { reply_error(res, 500, "internal error"); }
  });
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty()) reply_error(res, res.status, res.status == 404 ? "no such page: " + req.path : "bad request");
  });

  svr.Get("/", [&](const httplib::Request& req, httplib::Response& res) {
    if (rater_of(req).empty())  // a year; SameSite=Strict: only this page's own requests carry it
      res.set_header("Set-Cookie", std::string(kCookie) + "=" + new_rater_id() +
                                       "; Path=/; Max-Age=31536000; SameSite=Strict; HttpOnly");
    res.set_header("Cache-Control", "no-store");
    res.set_content(kPageHtml, "text/html; charset=utf-8");
  });

  svr.Get("/api/next", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string rater = rater_of(req);
    if (rater.empty()) return reply_error(res, 400, "no rater id: load the study page first (it sets a cookie)");
    const RaterPlan plan = plan_for_rater(rater, P);
    const std::set<int> done = db.answered(rater);
    res.set_header("Cache-Control", "no-store");
    for (int i = 0; i < P; ++i)
      if (!done.count(plan.order[i])) {
        res.set_content("{\"done\": false, \"pair\": " + std::to_string(plan.order[i]) +
                            ", \"index\": " + std::to_string(done.size()) + ", \"total\": " + std::to_string(P) +
                            ", \"show_ms\": " + std::to_string(study.show_ms) + "}\n",
                        "application/json");
        return;
      }
    res.set_content("{\"done\": true, \"total\": " + std::to_string(P) + "}\n", "application/json");
  });

  svr.Get("/api/image", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string rater = rater_of(req);
    if (rater.empty()) return reply_error(res, 400, "no rater id: load the study page first (it sets a cookie)");
    long pair = 0;
    if (!int_param(req, "pair", 1L << 30, pair)) return reply_error(res, 400, "pair: expected a pair id (an integer)");
    const std::string side = req.get_param_value("side");
    if (side != "left" && side != "right") return reply_error(res, 400, "side: expected left or right");
    if (pair >= P) return reply_error(res, 404, "unknown pair " + std::to_string(pair));
    const Pair& p = study.pairs[pair];
    const bool real_left = plan_for_rater(rater, P).real_left[pair];
    const std::string& rel = (side == "left") == real_left ? p.real : p.fake;
    res.set_header("Cache-Control", "no-store");
    res.set_content(study.png.at(rel), "image/png");
  });

  svr.Post("/api/answer", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string rater = rater_of(req);
    if (rater.empty()) return reply_error(res, 400, "no rater id: load the study page first (it sets a cookie)");
    long pair = 0, ms = 0;
    if (!int_param(req, "pair", 1L << 30, pair)) return reply_error(res, 400, "pair: expected a pair id (an integer)");
    const std::string choice = req.get_param_value("choice");
    if (choice != "left" && choice != "right") return reply_error(res, 400, "choice: expected left or right");
    if (!int_param(req, "ms", 3600L * 1000, ms))
      return reply_error(res, 400, "ms: expected the response time in milliseconds (0..3600000)");
    if (pair >= P)
      return reply_error(res, 404,
                         "unknown pair " + std::to_string(pair) + " (this study has 0.." + std::to_string(P - 1) + ")");
    const Pair& p = study.pairs[pair];
    Answer ans;
    ans.rater = rater;
    ans.pair = int(pair);
    ans.method = p.method;
    ans.temperature = p.temperature;
    ans.real_side = plan_for_rater(rater, P).real_left[pair] ? "left" : "right";
    ans.choice = choice;
    ans.fooled = choice != ans.real_side;
    ans.response_ms = ms;
    if (!db.insert(ans))  // returns after the commit
      return reply_error(res, 409,
                         "pair " + std::to_string(pair) + " already answered by this rater; the first answer stands");
    res.set_content("{\"stored\": true}\n", "application/json");
  });

  const int port = a.port == 0 ? svr.bind_to_any_port(a.bind) : (svr.bind_to_port(a.bind, a.port) ? a.port : -1);
  if (port < 0)
    throw Error("cannot listen on " + a.bind + ":" + std::to_string(a.port) +
                " (port in use, or not an address of this machine?); try --port 0 for any free port");
  std::printf("study: %d pairs from %s; answers in %s (%ld so far)\n", P, a.dir.c_str(), db_path.c_str(), db.count());
  std::printf("serving http://%s:%d/ (Ctrl-C to stop)\n", a.bind.c_str(), port);
  std::fflush(stdout);

  std::atomic<bool> signalled{false};
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_set, &sig);
    signalled = true;
    svr.stop();
  });
  const bool ok = svr.listen_after_bind();
  if (!signalled) pthread_kill(stopper.native_handle(), SIGTERM);  // listen failed: wake the stopper
  stopper.join();
  if (!ok && !signalled) throw Error("the server stopped: cannot accept connections on " + a.bind);
  const long n = db.count();
  std::printf("stopped; %ld answer%s in %s\n", n, n == 1 ? "" : "s", db_path.c_str());
  return 0;
}

}  // namespace prsr::study
