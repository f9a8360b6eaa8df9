#include "study/page.h"

namespace prsr::study {

// Trial: GET /api/next -> {"done":false,"pair":P,"index":i,"total":n,"show_ms":ms}. Both images
// are loaded before they are shown (so the timer measures seeing, not downloading), shown
// side by side for show_ms at 256x256 (nearest-neighbour: image-rendering: pixelated), then
// replaced by grey boxes while the two buttons ask which one was real. The response time runs
// from the buttons appearing to the click. POST /api/answer; only after the server answers 200
// (stored) or 409 (already stored) does the next pair come; any other reply shows the error
// and a retry button, so no click is lost silently.
const char* const kPageHtml = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Which image is real?</title>
<style>
  body { font-family: sans-serif; max-width: 640px; margin: 2em auto; text-align: center; color: #222; }
  .pair { display: flex; justify-content: center; gap: 32px; margin: 24px 0; }
  .slot { width: 256px; height: 256px; background: #888; }
  .slot img { width: 256px; height: 256px; image-rendering: crisp-edges; image-rendering: pixelated; display: block; }
  button { font-size: 1.2em; padding: 0.5em 1.5em; margin: 0 1em; }
  #error { color: #b00; }
  .hidden { display: none; }
  p { text-align: left; }
</style>
</head>
<body>
<div id="intro">
  <h1>Which image is real?</h1>
  <p>You will see pairs of small pictures side by side. In each pair, one is a real photograph
  and the other was made by a computer from a tiny, blurry version of the same photograph.</p>
  <p>The pictures are shown only briefly. When they disappear, click <b>Left</b> or <b>Right</b>
  for the one you think is the <b>real</b> photograph. If you are unsure, guess.</p>
  <p>Your answers are saved as you go: you may stop at any time and come back later in this browser.</p>
  <button id="start">Start</button>
</div>
<div id="trial" class="hidden">
  <div id="progress"></div>
  <div class="pair">
    <div class="slot" id="slot-left"></div>
    <div class="slot" id="slot-right"></div>
  </div>
  <div id="question" class="hidden">
    <div>Which image was the real photograph?</div><br>
    <button id="left">Left</button><button id="right">Right</button>
  </div>
</div>
<div id="done" class="hidden"><h1>Thank you!</h1><p>You have rated every pair.</p></div>
<div id="error" class="hidden"><p id="error-text"></p><button id="retry">Retry</button></div>
<script>
"use strict";
var current = null, shownAt = 0, retryAction = null;
function $(id) { return document.getElementById(id); }
function show(id, on) { $(id).classList.toggle("hidden", !on); }
function fail(text, action) {
  $("error-text").textContent = text;
  retryAction = action;
  show("error", true);
}
function loadImage(url) {
  return new Promise(function (resolve, reject) {
    var im = new Image();
    im.onload = function () { resolve(im); };
    im.onerror = function () { reject(new Error("could not load " + url)); };
    im.src = url;
  });
}
function nextPair() {
  show("error", false);
  show("question", false);
  fetch("/api/next", {cache: "no-store"}).then(function (r) {
    return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || r.statusText); return j; });
  }).then(function (j) {
    if (j.done) { show("trial", false); show("done", true); return; }
    current = j;
    $("progress").textContent = "Pair " + (j.index + 1) + " of " + j.total;
    var base = "/api/image?pair=" + j.pair + "&side=";
    return Promise.all([loadImage(base + "left"), loadImage(base + "right")]).then(function (ims) {
      $("slot-left").replaceChildren(ims[0]);
      $("slot-right").replaceChildren(ims[1]);
      var ask = function () {
        if (j.show_ms > 0) { $("slot-left").replaceChildren(); $("slot-right").replaceChildren(); }
        $("left").disabled = false; $("right").disabled = false;
        show("question", true);
        shownAt = performance.now();
      };
      if (j.show_ms > 0) setTimeout(ask, j.show_ms); else ask();
    });
  }).catch(function (e) { fail("Could not get the next pair: " + e.message, nextPair); });
}
function answer(choice) {
  if (!current) return;
  $("left").disabled = true; $("right").disabled = true;
  var ms = Math.round(performance.now() - shownAt);
  var body = new URLSearchParams({pair: String(current.pair), choice: choice, ms: String(ms)});
  var send = function () {
    show("error", false);
    fetch("/api/answer", {method: "POST", body: body}).then(function (r) {
      // 200: stored now; 409: stored before (a retried request whose reply was lost).
      if (r.ok || r.status === 409) { current = null; nextPair(); return; }
      return r.json().then(function (j) { throw new Error(j.error || r.statusText); });
    }).catch(function (e) { fail("Your answer was not saved: " + e.message, send); });
  };
  send();
}
$("start").onclick = function () { show("intro", false); show("trial", true); nextPair(); };
$("left").onclick = function () { answer("left"); };
$("right").onclick = function () { answer("right"); };
$("retry").onclick = function () { if (retryAction) retryAction(); };
</script>
</body>
</html>
)HTML";

}  // namespace prsr::study
