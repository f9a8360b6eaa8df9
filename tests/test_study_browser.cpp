// The rating page in a real browser: headless Chromium loads the page served by study serve,
// the test clicks Start and then Left / Right on several pairs with real mouse events
// (Input.dispatchMouseEvent of the Chrome DevTools Protocol, at the buttons' on-screen
// centres), and the database then holds exactly those answers.
//
// The protocol runs over --remote-debugging-pipe: JSON messages separated by NUL bytes on
// file descriptors 3 (to Chromium) and 4 (from it), so no WebSocket client is needed. Without
// a `chromium` on PATH the case is skipped with a visible line (tools/setup installs it).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>

#include <cstdio>
#include <set>

#include "study/answers.h"
#include "study/manifest.h"
#include "study/pairing.h"
#include "test_study_fixture.h"

using namespace prsr::study;
using namespace study_test;

namespace {

bool chromium_found() {
  static const bool found = [] {
    const bool f = std::system("command -v chromium >/dev/null 2>&1") == 0;
    if (!f) std::printf("skipped: study browser test: chromium not found on PATH (apt-get install chromium)\n");
    return f;
  }();
  return found;
}
// Asked at static-initialisation time, so the skip line comes before doctest's output.
const bool g_chromium = chromium_found();

// Headless Chromium driven over the DevTools pipe. Every call waits for its own reply
// (events in between are dropped); a reply that never comes fails after `timeout_s`.
class Chromium {
 public:
  explicit Chromium(const std::string& profile_dir, const std::string& log_path) {
    int to[2], from[2];
    if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      // fd 3 reads the commands, fd 4 writes the replies; moved up first so dup2 never
      // overwrites one with the other (dup2 clears close-on-exec on 3 and 4).
      const int r = fcntl(to[0], F_DUPFD, 10), w = fcntl(from[1], F_DUPFD, 10);
      dup2(r, 3);
      dup2(w, 4);
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(log, 1);
      dup2(log, 2);
      const std::string profile = "--user-data-dir=" + profile_dir;
      execlp("chromium", "chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--remote-debugging-pipe", "--window-size=1024,800", profile.c_str(),
             "about:blank", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(to[0]);
    close(from[1]);
    to_ = to[1];
    from_ = from[0];
  }
  ~Chromium() {
    if (to_ >= 0) close(to_);
    if (from_ >= 0) close(from_);
    if (pid_ > 0) {
      for (int i = 0; i < 50 && waitpid(pid_, nullptr, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (waitpid(pid_, nullptr, WNOHANG) == 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
    }
  }
  bool ok() const { return pid_ > 0; }

  // Sends {"id":N,"method":...,"params":...[,"sessionId":...]} and returns the reply's text.
  std::string call(const std::string& method, const std::string& params_json, const std::string& session = "",
                   double timeout_s = 30) {
    const int id = ++id_;
    std::string msg = "{\"id\":" + std::to_string(id) + ",\"method\":\"" + method + "\",\"params\":" + params_json;
    if (!session.empty()) msg += ",\"sessionId\":\"" + session + "\"";
    msg += "}";
    msg.push_back('\0');
    if (write(to_, msg.data(), msg.size()) != ssize_t(msg.size())) return "";
    const std::string prefix = "{\"id\":" + std::to_string(id) + ",";
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < timeout_s) {
      const size_t nul = buf_.find('\0');
      if (nul != std::string::npos) {
        std::string m = buf_.substr(0, nul);
        buf_.erase(0, nul + 1);
        if (m.rfind(prefix, 0) == 0) return m;
        continue;
      }
      pollfd p{from_, POLLIN, 0};
      if (poll(&p, 1, 200) > 0) {
        char b[65536];
        const ssize_t n = read(from_, b, sizeof b);
        if (n <= 0) return "";
        buf_.append(b, size_t(n));
      }
    }
    return "";
  }

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1, id_ = 0;
  std::string buf_;
};

// The string after "key":" in a reply (targetId, sessionId, a string result value).
std::string field(const std::string& reply, const std::string& key) {
  const std::string k = "\"" + key + "\":\"";
  const size_t at = reply.find(k);
  if (at == std::string::npos) return "";
  const size_t end = reply.find('"', at + k.size());
  return reply.substr(at + k.size(), end - at - k.size());
}

}  // namespace

TEST_CASE("study browser: headless Chromium clicks through pairs; the database holds exactly those answers" *
          doctest::skip(!g_chromium)) {
  TempDir d("study-browser");
  make_study(d / "s", 3, {{"prsr", "1.0"}, {"bicubic", ""}});  // 6 pairs
  const int P = 6, clicks = 4;
  Server server(d / "s", d.path.string(), {"--show-ms", "800"});
  REQUIRE(server.port > 0);
  Chromium browser(d / "profile", d / "chromium.log");
  REQUIRE(browser.ok());
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port) + "/";
  const std::string target = field(browser.call("Target.createTarget", "{\"url\":\"" + url + "\"}"), "targetId");
  if (target.empty()) {
    const std::string log = slurp(d / "chromium.log");
    FAIL("chromium did not open the page; end of its log: " << log.substr(log.size() > 2000 ? log.size() - 2000 : 0));
  }
  const std::string session =
      field(browser.call("Target.attachToTarget", "{\"targetId\":\"" + target + "\",\"flatten\":true}"), "sessionId");
  REQUIRE(!session.empty());

  // JS expression -> its string value ("" when it is not a string).
  auto eval = [&](const std::string& js) {
    std::string esc;
    for (char c : js) esc += c == '"' ? std::string("\\\"") : std::string(1, c);
    return field(browser.call("Runtime.evaluate", "{\"expression\":\"" + esc + "\",\"returnByValue\":true}", session),
                 "value");
  };
  // Waits (at most 15 s) for the button to be visible and enabled, then presses and releases
  // the left mouse button at its centre.
  auto click = [&](const std::string& id) {
    std::string at;
    for (int i = 0; i < 150 && at.empty(); ++i) {
      at = eval("(function(){var e=document.getElementById('" + id +
                "');if(!e||e.offsetParent===null||e.disabled)return '';var r=e.getBoundingClientRect();"
                "return (r.left+r.width/2)+' '+(r.top+r.height/2);})()");
      if (at.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE_MESSAGE(!at.empty(), "button #" << id << " never became clickable");
    const std::string x = at.substr(0, at.find(' ')), y = at.substr(at.find(' ') + 1);
    for (const char* type : {"mousePressed", "mouseReleased"})
      REQUIRE(browser
                  .call("Input.dispatchMouseEvent",
                        std::string("{\"type\":\"") + type + "\",\"x\":" + x + ",\"y\":" + y +
                            ",\"button\":\"left\",\"clickCount\":1}",
                        session)
                  .find("\"result\"") != std::string::npos);
  };
  // The text of #progress once it reads `want` (at most 15 s).
  auto wait_progress = [&](const std::string& want) {
    std::string p;
    for (int i = 0; i < 150 && p != want; ++i) {
      p = eval("document.getElementById('progress').textContent");
      if (p != want) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(p == want);
  };

  click("start");
  std::vector<std::pair<int, std::string>> answered;  // (pair shown, button clicked)
  for (int k = 0; k < clicks; ++k) {
    wait_progress("Pair " + std::to_string(k + 1) + " of " + std::to_string(P));
    // While the images are up: two 32x32 PNGs drawn at 256x256, nearest neighbour.
    if (k == 0) {
      std::string shown;
      for (int i = 0; i < 100 && shown.rfind("32 ", 0) != 0; ++i) {
        shown = eval(
            "(function(){var i=document.querySelectorAll('.slot img');if(i.length!==2)return 'n='+i.length;"
            "return i[0].naturalWidth+' '+i[0].getBoundingClientRect().width+' '+"
            "getComputedStyle(i[0]).imageRendering;})()");
        if (shown.rfind("32 ", 0) != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      CHECK(shown == "32 256 pixelated");
    }
    const std::string choice = k % 2 ? "left" : "right";
    click(choice);  // waits for the buttons, which appear after --show-ms
    // The pair the page was showing: the page's own state, read back.
    const std::string pair = eval("String(current ? current.pair : '')");
    REQUIRE(!pair.empty());
    answered.push_back({std::stoi(pair), choice});
  }
  // The 4th answer is acknowledged once the 5th pair is on screen.
  wait_progress("Pair " + std::to_string(clicks + 1) + " of " + std::to_string(P));
  const std::string who = eval("'x'");  // keep the session busy until the page settled
  CHECK(who == "x");
  browser.call("Browser.close", "{}");
  CHECK(server.stop(SIGINT) == 0);

  AnswerDb db(d / "s/answers.sqlite", manifest_id(d / "s"), false);
  const std::vector<Answer> all = db.all();
  REQUIRE(all.size() == size_t(clicks));
  std::set<std::string> raters;
  for (size_t i = 0; i < all.size(); ++i) {
    raters.insert(all[i].rater);
    CHECK(all[i].pair == answered[i].first);
    CHECK(all[i].choice == answered[i].second);
    CHECK(all[i].response_ms >= 0);
    CHECK(all[i].real_side == (plan_for_rater(all[i].rater, P).real_left[all[i].pair] ? "left" : "right"));
  }
  CHECK(raters.size() == 1);  // one browser, one cookie
  // The pairs came in the rater's order.
  const RaterPlan plan = plan_for_rater(*raters.begin(), P);
  for (int k = 0; k < clicks; ++k) CHECK(answered[k].first == plan.order[k]);
}
