// ./build/study end to end: prepare with tiny checkpoints, serve under a burst of concurrent
// answers, malformed / unknown / repeated requests, SIGKILL after acknowledged answers,
// Ctrl-C, a folder that is not a study, and report. The server runs as a child process on an
// ephemeral port of 127.0.0.1 (test_study_fixture.h); the clients are cpp-httplib's.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "data/preprocess.h"
#include "engine/backend.h"
#include "eval/bicubic.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/sampler.h"
#include "study/answers.h"
#include "study/manifest.h"
#include "study/pairing.h"
#include "test_study_fixture.h"

using namespace prsr;
using namespace prsr::study;
using namespace study_test;

namespace {

struct Run {
  int rc = -1;
  std::string out, err;
};

Run run_study(const TempDir& d, const std::string& args) {
  const std::string out = d / "run.out", err = d / "run.err";
  const std::string cmd = "cd '" + d.path.string() + "' && '" + std::string(PRSR_STUDY_BIN) + "' " + args + " >'" +
                          out + "' 2>'" + err + "'";
  const int st = std::system(cmd.c_str());
  Run r;
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// Non-zero exit and exactly one stderr line "error: ..." containing `what`.
void check_error(const Run& r, const std::string& what) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.rc == 1);
  CHECK(r.err.rfind("error: ", 0) == 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find(what) != std::string::npos);
}

void make_checkpoint(const std::string& path, const std::string& loss) {
  ModelConfig c;
  c.colors = 3;
  c.size = 32;
  c.cond_channels = 4;
  c.cond_blocks = 1;
  c.prior_channels = 4;
  c.prior_layers = 1;
  c.kernel = 3;
  c.first_kernel = 3;
  c.head = 16;
  c.loss = loss;
  Model<float> m(c, Device::Cpu);
  m.init(5);
  CheckpointInfo info;
  info.model = c;
  info.step = 1;
  save_checkpoint(path, m, nullptr, info);
}

data::Image noise_image(int w, int h, unsigned seed) {
  std::mt19937 rng(seed);
  data::Image im;
  im.w = w;
  im.h = h;
  im.c = 3;
  im.px.resize(size_t(w) * h * 3);
  for (uint8_t& v : im.px) v = uint8_t(rng());
  return im;
}

httplib::Headers cookie(const std::string& r) { return {{"Cookie", "prsr_rater=" + r}}; }

// The status and body of one raw request over a plain socket (for what httplib's client
// would never send).
std::string raw_request(int port, const std::string& bytes) {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(s);
    return "";
  }
  // The server closes after an error reply; the timeout only keeps a broken server from hanging
  // the test. It is well above the server's own 5 s read timeout, which ends a request whose body
  // is shorter than its Content-Length (with 5 s here too, a loaded machine made it a race).
  timeval tv{30, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)!write(s, bytes.data(), bytes.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(s, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  close(s);
  return out;
}

}  // namespace

TEST_CASE("study cli: prepare writes the real image and every method's output, then report") {
  TempDir d("study-prepare");
  make_checkpoint(d / "model.bin", "pixel");
  make_checkpoint(d / "l2.bin", "l2");
  fs::create_directories(d.path / "faces");
  for (int i = 0; i < 6; ++i) data::write_png(d / ("faces/" + std::to_string(i) + ".png"), noise_image(40, 36, i));
  const std::string common = "--data folder:faces --cache-dir cache --count 3 --seed 4 ";
  Run r = run_study(
      d, "prepare --ckpt model.bin --baseline-ckpt l2.bin --bicubic --temperature 1.0,0.8 " + common + "--out st");
  INFO(r.out << r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("wrote 12 pairs (3 inputs x 4 methods)") != std::string::npos);
  const std::vector<Pair> pairs = read_manifest(d / "st");
  REQUIRE(pairs.size() == 12);
  std::map<std::string, int> per_condition;
  std::set<int> inputs;
  for (const Pair& p : pairs) {
    ++per_condition[condition_label(p.method, p.temperature)];
    inputs.insert(p.input);
  }
  CHECK(per_condition == std::map<std::string, int>{{"prsr t=1.0", 3}, {"prsr t=0.8", 3}, {"l2", 3}, {"bicubic", 3}});
  CHECK(inputs.size() == 3);
  // The same input's four pairs share the real image; the fakes are what each method makes
  // from its 8x8 box average: bicubic and the deterministic L2 model are recomputed here.
  const CheckpointInfo l2_info = read_checkpoint_info(d / "l2.bin");
  Model<float> l2(l2_info.model, Device::Cpu);
  load_checkpoint(d / "l2.bin", l2, nullptr);
  for (const Pair& p : pairs) {
    const data::Image real = data::read_image(d / ("st/" + p.real)), fake = data::read_image(d / ("st/" + p.fake));
    REQUIRE(real.w == 32);
    REQUIRE(fake.w == 32);
    REQUIRE(real.c == 3);
    std::vector<uint8_t> x(8 * 8 * 3), want(32 * 32 * 3);
    data::box_downsample4(real.px.data(), 32, 3, x.data());
    if (p.method == "bicubic") {
      eval::bicubic_upsample(x.data(), 8, 8, 3, 4, want.data());
      CHECK(fake.px == want);
    } else if (p.method == "l2") {
      SampleOptions o;
      CHECK(fake.px == sample_images(l2, x.data(), 1, o));
    } else {
      CHECK(fake.px != real.px);
    }
  }
  // Never over an existing study; the model must be the PixelCNN one.
  check_error(run_study(d, "prepare --ckpt model.bin " + common + "--out st"), "already holds a study");
  check_error(run_study(d, "prepare --ckpt l2.bin " + common + "--out st2"), "wants the PixelCNN model");
  check_error(run_study(d, "prepare --ckpt model.bin --data folder:faces --cache-dir cache --count 99 --out st3"),
              "has only 6 images");
  check_error(run_study(d, "prepare --ckpt model.bin --out st4"), "--data is required");
  check_error(run_study(d, "prepare --ckpt model.bin --data folder:faces --temperature 0.8,x --out st4"),
              "--temperature");
  // Report before any answer: a clear message, no crash.
  check_error(run_study(d, "report st"), "no answers yet");
}

TEST_CASE("study cli: a folder that is not a prepared study, and bad flags, are one clear line") {
  TempDir d("study-notastudy");
  fs::create_directories(d.path / "empty");
  check_error(run_study(d, "serve empty --port 0"), "not a prepared study");
  check_error(run_study(d, "serve nowhere --port 0"), "no such folder");
  check_error(run_study(d, "report empty"), "not a prepared study");
  make_study(d / "broken", 1, {{"bicubic", ""}});
  fs::remove(d.path / "broken/images/fake_0_0.png");
  check_error(run_study(d, "serve broken --port 0"), "fake_0_0.png");
  check_error(run_study(d, "serve"), "give the study folder");
  check_error(run_study(d, "serve empty --port 70000"), "out of range");
  check_error(run_study(d, "serve empty --colour red"), "unknown flag '--colour'");
  check_error(run_study(d, "frobnicate"), "unknown command 'frobnicate'");
  check_error(run_study(d, ""), "no command");
  Run h = run_study(d, "--help");
  CHECK(h.rc == 0);
  CHECK(h.out.find("study prepare") != std::string::npos);
  h = run_study(d, "serve --help");
  CHECK(h.rc == 0);
  CHECK(h.out.find("--show-ms") != std::string::npos);
}

TEST_CASE("study cli: concurrent raters lose no answer; Ctrl-C stops cleanly") {
  TempDir d("study-burst");
  // 5 inputs x 5 conditions = 25 pairs; 4 raters answer all of them at once.
  const std::vector<Pair> pairs =
      make_study(d / "s", 5, {{"prsr", "1.0"}, {"prsr", "0.9"}, {"prsr", "0.8"}, {"l2", ""}, {"bicubic", ""}});
  const int P = int(pairs.size()), R = 4;
  Server server(d / "s", d.path.string());
  REQUIRE(server.port > 0);
  std::mutex mu;
  std::vector<std::string> failures;
  std::map<std::pair<std::string, int>, std::string> sent;  // (rater, pair) -> choice
  std::vector<std::thread> clients;
  for (int c = 0; c < R; ++c)
    clients.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", server.port);
      cli.set_read_timeout(20, 0);
      const std::string who = rater(100 + c);
      const RaterPlan plan = plan_for_rater(who, P);
      for (int i = 0; i < P; ++i) {
        // The next pair is the rater's own order, as the page would be told.
        auto next = cli.Get("/api/next", cookie(who));
        const std::string want = "\"pair\": " + std::to_string(plan.order[i]) + ",";
        if (!next || next->status != 200 || next->body.find(want) == std::string::npos) {
          std::lock_guard<std::mutex> l(mu);
          failures.push_back(who + " next " + std::to_string(i) + ": " + (next ? next->body : "no reply"));
          return;
        }
        const std::string choice = (i + c) % 3 ? "left" : "right";
        auto res =
            cli.Post("/api/answer", cookie(who),
                     httplib::Params{{"pair", std::to_string(plan.order[i])}, {"choice", choice}, {"ms", "350"}});
        std::lock_guard<std::mutex> l(mu);
        if (!res || res->status != 200) failures.push_back(who + " answer: " + (res ? res->body : "no reply"));
        else sent[{who, plan.order[i]}] = choice;
      }
      auto done = cli.Get("/api/next", cookie(who));
      std::lock_guard<std::mutex> l(mu);
      if (!done || done->body.find("\"done\": true") == std::string::npos) failures.push_back(who + ": not done");
    });
  for (std::thread& t : clients) t.join();
  for (const std::string& f : failures) FAIL_CHECK(f);
  CHECK(sent.size() == size_t(R * P));
  // Ctrl-C: exit 0 and the final count.
  CHECK(server.stop(SIGINT) == 0);
  CHECK(slurp(server.out_path).find("stopped; 100 answers") != std::string::npos);
  // The database holds exactly the acknowledged answers, with the server's own record of the
  // side (from the rater's plan) and the manifest's method and temperature.
  AnswerDb db(d / "s/answers.sqlite", manifest_id(d / "s"), false);
  const std::vector<Answer> all = db.all();
  REQUIRE(all.size() == size_t(R * P));
  std::set<std::pair<std::string, int>> seen;
  for (const Answer& a : all) {
    CHECK(seen.insert({a.rater, a.pair}).second);
    REQUIRE(sent.count({a.rater, a.pair}));
    CHECK(a.choice == sent[{a.rater, a.pair}]);
    const bool real_left = plan_for_rater(a.rater, P).real_left[a.pair];
    CHECK(a.real_side == (real_left ? "left" : "right"));
    CHECK(a.fooled == (a.choice != a.real_side));
    CHECK(a.method == pairs[a.pair].method);
    CHECK(a.temperature == pairs[a.pair].temperature);
    CHECK(a.response_ms == 350);
  }
  // And report reads them: 4 raters x 5 pairs per condition.
  const Run rep = run_study(d, "report s");
  CHECK(rep.rc == 0);
  CHECK(rep.out.find("100 answers from 4 raters") != std::string::npos);
}

TEST_CASE("study cli: malformed, unknown and repeated requests get a clear 4xx; the server survives") {
  TempDir d("study-bad");
  make_study(d / "s", 2, {{"prsr", "1.0"}, {"bicubic", ""}});  // pairs 0..3
  Server server(d / "s", d.path.string());
  REQUIRE(server.port > 0);
  httplib::Client cli("127.0.0.1", server.port);
  const httplib::Headers me = cookie(rater(7));
  auto post = [&](const httplib::Params& p, const httplib::Headers& h) { return cli.Post("/api/answer", h, p); };
  struct Case {
    httplib::Params params;
    int status;
    const char* message;
  };
  const std::vector<Case> cases = {
      {{{"choice", "left"}, {"ms", "5"}}, 400, "pair: expected"},
      {{{"pair", "x1"}, {"choice", "left"}, {"ms", "5"}}, 400, "pair: expected"},
      {{{"pair", "-1"}, {"choice", "left"}, {"ms", "5"}}, 400, "pair: expected"},
      {{{"pair", "99999999999999"}, {"choice", "left"}, {"ms", "5"}}, 400, "pair: expected"},
      {{{"pair", "1"}, {"choice", "middle"}, {"ms", "5"}}, 400, "choice: expected left or right"},
      {{{"pair", "1"}, {"choice", "left"}}, 400, "ms: expected"},
      {{{"pair", "1"}, {"choice", "left"}, {"ms", "1.5"}}, 400, "ms: expected"},
      {{{"pair", "1"}, {"choice", "left"}, {"ms", "99999999"}}, 400, "ms: expected"},
      {{{"pair", "4"}, {"choice", "left"}, {"ms", "5"}}, 404, "unknown pair 4 (this study has 0..3)"},
  };
  for (const Case& c : cases) {
    auto res = post(c.params, me);
    REQUIRE(res);
    CHECK(res->status == c.status);
    CHECK(res->body.find(c.message) != std::string::npos);
  }
  // No cookie, or a cookie that is not a rater id.
  auto res = post({{"pair", "1"}, {"choice", "left"}, {"ms", "5"}}, {});
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK(res->body.find("no rater id") != std::string::npos);
  res = post({{"pair", "1"}, {"choice", "left"}, {"ms", "5"}}, {{"Cookie", "prsr_rater=../../etc"}});
  REQUIRE(res);
  CHECK(res->status == 400);
  // A repeated answer: the first stands (200), the second is 409 and changes nothing.
  res = post({{"pair", "1"}, {"choice", "left"}, {"ms", "5"}}, me);
  REQUIRE(res);
  CHECK(res->status == 200);
  res = post({{"pair", "1"}, {"choice", "right"}, {"ms", "9"}}, me);
  REQUIRE(res);
  CHECK(res->status == 409);
  CHECK(res->body.find("already answered") != std::string::npos);
  // Images: unknown pair, bad side, unknown path.
  auto img = cli.Get("/api/image?pair=9&side=left", me);
  REQUIRE(img);
  CHECK(img->status == 404);
  img = cli.Get("/api/image?pair=0&side=top", me);
  REQUIRE(img);
  CHECK(img->status == 400);
  img = cli.Get("/api/image?pair=0&side=left", me);
  REQUIRE(img);
  CHECK(img->status == 200);
  CHECK(img->get_header_value("Content-Type") == "image/png");
  auto nothing = cli.Get("/manifest.tsv", me);
  REQUIRE(nothing);
  CHECK(nothing->status == 404);
  // The page sets a rater cookie when there is none, and not when there is one.
  auto page = cli.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->get_header_value("Set-Cookie").rfind("prsr_rater=", 0) == 0);
  CHECK(page->body.find("Which image is real?") != std::string::npos);
  CHECK(page->body.find("http") == std::string::npos);  // no external assets
  page = cli.Get("/", me);
  REQUIRE(page);
  CHECK_FALSE(page->has_header("Set-Cookie"));
  // Raw garbage and an oversized body over a plain socket.
  CHECK(raw_request(server.port, "GARBAGE\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  CHECK(raw_request(server.port,
                    "POST /api/answer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'x'))
            .rfind("HTTP/1.1 413", 0) == 0);
  // Still serving, and only the one good answer was stored.
  CHECK(server.alive());
  auto next = cli.Get("/api/next", me);
  REQUIRE(next);
  CHECK(next->status == 200);
  CHECK(next->body.find("\"index\": 1") != std::string::npos);
  CHECK(server.stop(SIGTERM) == 0);
  AnswerDb db(d / "s/answers.sqlite", manifest_id(d / "s"), false);
  const std::vector<Answer> all = db.all();
  REQUIRE(all.size() == 1);
  CHECK(all[0].choice == "left");
  CHECK(all[0].response_ms == 5);
}

TEST_CASE("study cli: a killed server loses no acknowledged answer, and a restart resumes") {
  TempDir d("study-kill");
  make_study(d / "s", 4, {{"prsr", "1.0"}, {"l2", ""}});  // 8 pairs
  const int P = 8;
  std::vector<int> acked;
  {
    Server server(d / "s", d.path.string());
    REQUIRE(server.port > 0);
    httplib::Client cli("127.0.0.1", server.port);
    const RaterPlan plan = plan_for_rater(rater(1), P);
    for (int i = 0; i < 5; ++i) {
      auto res = cli.Post("/api/answer", cookie(rater(1)),
                          httplib::Params{{"pair", std::to_string(plan.order[i])}, {"choice", "left"}, {"ms", "100"}});
      REQUIRE(res);
      REQUIRE(res->status == 200);
      acked.push_back(plan.order[i]);
    }
    CHECK(server.stop(SIGKILL) == 128 + SIGKILL);  // no shutdown code runs
  }
  {
    AnswerDb db(d / "s/answers.sqlite", manifest_id(d / "s"), false);
    std::set<int> want(acked.begin(), acked.end());
    CHECK(db.answered(rater(1)) == want);
  }
  // Restarted on the same folder: the rater resumes at the 6th pair of their order.
  Server again(d / "s", d.path.string());
  REQUIRE(again.port > 0);
  CHECK(slurp(again.out_path).find("(5 so far)") != std::string::npos);
  httplib::Client cli("127.0.0.1", again.port);
  auto next = cli.Get("/api/next", cookie(rater(1)));
  REQUIRE(next);
  CHECK(next->body.find("\"pair\": " + std::to_string(plan_for_rater(rater(1), P).order[5]) + ",") !=
        std::string::npos);
  CHECK(next->body.find("\"index\": 5") != std::string::npos);
  // A second server on the same port is a clear error.
  TempDir d2("study-port");
  Run r = run_study(d2, "serve '" + (d / "s") + "' --port " + std::to_string(again.port));
  check_error(r, "cannot listen on 127.0.0.1:" + std::to_string(again.port));
  CHECK(again.stop(SIGINT) == 0);
}
