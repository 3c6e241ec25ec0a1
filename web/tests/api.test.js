// The shared page helpers that need no DOM (web/static/js/lib/): backoff, the student view,
// wording, URLs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { errorText } from "../static/js/lib/http.js";
import { backoff, tokenProtocols, wsUrl } from "../static/js/lib/socket.js";
import { ago, emotionColor, formatTime, studentView } from "../static/js/lib/wording.js";

const CP = { backoff, tokenProtocols, wsUrl, errorText, ago, emotionColor, formatTime, studentView };
globalThis.location = { protocol: "https:", host: "class.example:8443", pathname: "/", search: "" };

test("backoff doubles from 1 s up to 30 s, each delay drawn from [d/2, d]", () => {
  const retry = CP.backoff(1000, 30000);
  const ceilings = [1000, 2000, 4000, 8000, 16000, 30000, 30000];
  for (const ceiling of ceilings) {
    const delay = retry.next();
    assert.ok(delay >= ceiling / 2 && delay <= ceiling, delay + " outside [" + ceiling / 2 + ", " + ceiling + "]");
  }
  retry.reset();
  assert.ok(retry.next() <= 1000, "reset starts again from 1 s");
});

test("backoff's jitter spreads a classroom's reconnects", () => {
  const delays = new Set();
  for (let i = 0; i < 50; i++) delays.add(CP.backoff(1000, 30000).next());
  assert.ok(delays.size > 10, "50 pages reconnecting together drew only " + delays.size + " delays");
});

test("studentView: a withdrawal wins over everything", () => {
  const v = CP.studentView({ presence: "present", t: 5 }, { presence: "present", emotion: "happy", t: 9 }, true);
  assert.equal(v.presence, "withdrawn");
  assert.equal(v.emotion, null);
  assert.equal(CP.studentView(null, { presence: "withdrawn", t: 1 }, false).presence, "withdrawn");
});

test("studentView: a newer connection state hides an older estimate", () => {
  const e = { presence: "present", emotion: "sad", confidence: 0.7, probs: { sad: 0.7 }, faces: 1, t: 10 };
  const dropped = CP.studentView({ presence: "disconnected", t: 11 }, e, false);
  assert.equal(dropped.presence, "disconnected");
  assert.equal(dropped.emotion, null);
  assert.equal(dropped.t, 11);
  const back = CP.studentView({ presence: "disconnected", t: 9 }, e, false);
  assert.equal(back.presence, "present");
  assert.equal(back.emotion, "sad");
  assert.equal(back.confidence, 0.7);
  assert.equal(back.faces, 1);
});

test("studentView: no estimate under other presences, nothing yet is 'waiting'", () => {
  const noFace = CP.studentView(null, { presence: "no_face", emotion: "happy", faces: 0, t: 3 }, false);
  assert.equal(noFace.presence, "no_face");
  assert.equal(noFace.emotion, null);
  assert.equal(noFace.faces, 0);
  assert.equal(CP.studentView(null, null, false).presence, "waiting");
  assert.equal(CP.studentView({ t: 2 }, null, false).presence, "present");
});

test("ago words a time in the past", () => {
  const now = Date.now() / 1000;
  assert.equal(CP.ago(0), "never");
  assert.equal(CP.ago(now), "just now");
  assert.equal(CP.ago(now - 12), "12 s ago");
  assert.equal(CP.ago(now - 180), "3 min ago");
  assert.equal(CP.ago(now - 7300), "2 h ago");
  assert.equal(CP.ago(now + 60), "just now", "a clock ahead of ours is not the future");
});

test("errorText reads FastAPI's detail, string or validation list", () => {
  assert.equal(CP.errorText({ data: { detail: "No such session" } }, "x"), "No such session");
  assert.equal(CP.errorText({ data: { detail: [{ msg: "field required" }] } }, "x"), "field required");
  assert.equal(CP.errorText({ data: null }, "fallback"), "fallback");
  assert.equal(CP.errorText(null, "fallback"), "fallback");
});

test("emotion colours: fixed for FER labels, spares cycle for other models' labels", () => {
  assert.equal(CP.emotionColor("happy"), "#2e7d32");
  const labels = ["a", "b", "c", "d", "e"];
  assert.equal(CP.emotionColor("a", labels), CP.emotionColor("e", labels));
  assert.notEqual(CP.emotionColor("a", labels), CP.emotionColor("b", labels));
  assert.match(CP.emotionColor("unknown"), /^#[0-9a-f]{6}$/);
});

test("WebSocket URLs follow the page's scheme and host; the token travels as a subprotocol", () => {
  assert.equal(CP.wsUrl("/ws/x"), "wss://class.example:8443/ws/x");
  assert.deepEqual(Array.from(CP.tokenProtocols("abc")), ["classpulse", "classpulse.token.abc"]);
});

test("formatTime: empty for nothing, the input back for an unparseable value", () => {
  assert.equal(CP.formatTime(null), "");
  assert.equal(CP.formatTime("not a time"), "not a time");
  assert.notEqual(CP.formatTime(1700000000), "");
});
