/* Edge capture on the student page: starts edge.js's detector when the server asks for it
 * (config.capture "edge"), falls back to JPEG frames for this page's lifetime when the runtime or
 * the model can't load, when detection fails, or when the detector's median time over its first
 * frames is above EDGE_SLOW_MS, and says in words what leaves the device.
 *
 * EDGE_SLOW_MS: the detector runs on the page's main thread (one wasm thread, no worker), so
 * each call blocks the page for that long. 50 ms is the "long task" limit beyond which input
 * feels delayed; at the highest rate the server allows (5 frames/s) it still leaves the page
 * 75 % of its time. Measured in this project's test Chromium (headless, one core of a Xeon
 * server, BlazeFace short range at 640x480): median 10 ms, so a device about 5 times slower
 * still runs on-device detection; slower ones send frames. */

import { fallbackText } from "./lib/wording.js";
import { frameBox, scheduleCapture, setButtons } from "./student/camera.js";
import { $, state } from "./student/state.js";

const EDGE_SLOW_MS = 50;
const EDGE_TRIAL_FRAMES = 10;
const EDGE_LOAD_TIMEOUT_MS = 30000; // a stalled download must not keep the page silent
// 640x480 from the camera: a face at a laptop's distance is then wider than the 64 px crop
// (downscaled, never upscaled); the detector sees 128x96 of it anyway.
export const EDGE_CAMERA = { width: 640, height: 480 };
export const EDGE_MAX_SIDE = 4096; // the faces message's limit

export const edge = {
  state: "off", // off | loading | ready | fallback
  detector: null,
  reason: null, // why it fell back
  trial: [], // detector times of the first frames, for the speed check
  recent: [], // the latest detector times, for the page and the stats
  canvas: document.createElement("canvas"),
  context: null,
};
edge.context = edge.canvas.getContext("2d", { willReadFrequently: true });

export function median(values) {
  const sorted = values.slice().sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function sendingFaces() {
  return state.config.capture === "edge" && edge.state === "ready";
}

/** Edge capture required (no frames allowed) and this page fell back: it sends nothing. */
export function edgeBlocked() {
  return !state.config.frames_allowed && edge.state === "fallback";
}

export function cameraSize() {
  const config = state.config;
  return config.capture === "edge" && edge.state !== "fallback"
    ? EDGE_CAMERA
    : { width: config.width, height: config.height };
}

/** The server's detector settings on this page's detector, so both paths find the same faces. */
export function tuneDetector(detector) {
  const config = state.config;
  detector.maxFaces = config.max_faces;
  detector.minFaceSize = config.min_face_size;
  detector.iou = config.detector_iou_threshold;
  if (config.detector_score_threshold !== null) detector.setScoreThreshold(config.detector_score_threshold);
}

export function startEdge() {
  if (edge.state !== "off") return;
  if (!window.ClassPulseEdge) {
    fallBack("unsupported", "edge.js did not load");
    return;
  }
  edge.state = "loading";
  renderCapture();
  const timeout = new Promise((_resolve, reject) => {
    setTimeout(
      () => reject(Object.assign(new Error("timed out"), { reason: "model_load_failed" })),
      EDGE_LOAD_TIMEOUT_MS,
    );
  });
  Promise.race([window.ClassPulseEdge.load(state.config.detector_url), timeout]).then(
    (detector) => {
      if (edge.state !== "loading") return;
      tuneDetector(detector);
      edge.detector = detector;
      edge.state = "ready";
      renderCapture();
      // A camera opened before the detector was ready: ask it for the edge resolution.
      if (state.stream) {
        state.stream.getVideoTracks().forEach((track) => {
          track
            .applyConstraints({ width: { ideal: EDGE_CAMERA.width }, height: { ideal: EDGE_CAMERA.height } })
            .catch(() => {
              /* keep the resolution it has */
            });
        });
      }
    },
    (err) => {
      fallBack(err?.reason || "model_load_failed", err);
    },
  );
}

export function fallBack(reason, err) {
  if (edge.state === "fallback") return;
  edge.state = "fallback";
  edge.reason = reason;
  if (edge.detector) edge.detector.release().catch(() => undefined);
  edge.detector = null;
  if (err) console.warn("ClassPulse: on-device detection off (" + reason + "):", err);
  renderCapture();
  scheduleCapture();
}

export function noteDetectorTime(ms) {
  edge.recent.push(ms);
  if (edge.recent.length > EDGE_TRIAL_FRAMES) edge.recent.shift();
  if (edge.trial.length < EDGE_TRIAL_FRAMES) {
    edge.trial.push(ms);
    if (edge.trial.length === EDGE_TRIAL_FRAMES && median(edge.trial) > EDGE_SLOW_MS) {
      fallBack("too_slow");
    }
  }
  renderCapture();
}

/** What leaves this device now, in plain words. */
function captureText() {
  const config = state.config;
  const box = frameBox();
  const frames =
    "small pictures from the camera (at most " +
    box.width +
    "×" +
    box.height +
    ") go to the server, are analysed in memory and are never stored.";
  if (!state.configSeen) return "Connecting to the server: nothing is sent yet.";
  if (edgeBlocked()) {
    return (
      "Nothing is sent: your school allows only on-device face detection, and " +
      fallbackText(edge.reason, true) +
      ". You still attend the class; try another browser or device to share your camera."
    );
  }
  if (config.capture !== "edge") return "Sending camera frames: " + frames;
  if (edge.state === "fallback") return "Sending camera frames: " + fallbackText(edge.reason, true) + ", so " + frames;
  if (edge.state !== "ready") return "Preparing on-device face detection: nothing is sent until it is ready.";
  if (state.policyMode === "off") {
    return "On-device detection: only where your face is in the picture (a box) leaves this device; no picture is sent.";
  }
  return (
    "On-device detection: only where your face is (a box) and a small grey picture of it (" +
    config.crop_size +
    "×" +
    config.crop_size +
    " pixels) leave this device; the camera picture is not sent."
  );
}

export function renderCapture() {
  const config = state.config;
  const mode = $("capture-mode");
  const waiting = !state.configSeen || (config.capture === "edge" && edge.state === "loading");
  mode.dataset.capture = sendingFaces() ? "edge" : edgeBlocked() ? "none" : waiting ? "waiting" : "frames";
  mode.dataset.fallback = edge.reason || "";
  mode.textContent = (state.stream || waiting ? "" : "While the camera is on: ") + captureText();
  $("capture-kind").textContent = sendingFaces()
    ? state.policyMode === "off"
      ? "face boxes only"
      : "face boxes and grey face crops"
    : edgeBlocked()
      ? "nothing (on-device detection required)"
      : waiting
        ? "nothing yet"
        : "camera frames";
  const recent = edge.recent.length ? median(edge.recent) : null;
  $("detector-time").textContent =
    recent === null
      ? config.capture === "edge"
        ? "—"
        : "on the server"
      : Math.round(recent) + " ms per frame on this device" + (edge.reason === "too_slow" ? " (too slow)" : "");
  setButtons();
}
