/* Edge capture: the student's page finds the faces itself and sends, per frame, one binary
 * "faces" message (docs/edge-wire.md) with the boxes and, unless emotions are off, one grey
 * crop per face, instead of a JPEG of the whole picture.
 *
 * It runs the same BlazeFace ONNX file as the worker, in onnxruntime-web (WebAssembly, one
 * thread), and prepares everything as the worker does (worker/detector.py, worker/classifier.py):
 * the letterbox and the crops are resized by an integer reimplementation of OpenCV's
 * INTER_LINEAR for 8-bit images, grey is OpenCV's fixed-point BT.601, so a crop cut here equals
 * the one the worker would cut from the same pixels. Browser scaling (drawImage) is not used:
 * its filter differs from OpenCV's.
 *
 * A module: the image operations (edge/image.js), the BlazeFace decoding (edge/decode.js) and
 * the faces message (edge/wire.js, version 2: with each face's head yaw and pitch from
 * lib/head_pose.js) beside it. Exposed as window.ClassPulseEdge (the student page
 * and the Chromium tests use it); onnxruntime-web is loaded only when a page asks for it. */

import { ssdAnchors, weightedNms } from "./edge/decode.js";
import { cropFaces, greyRegion, resizeLinear, roundHalfEven, squareCropBox } from "./edge/image.js";
import { encodeFaces, packCrops } from "./edge/wire.js";
import { headPose } from "./lib/head_pose.js";

const ORT_SCRIPT = "/static/vendor/onnxruntime-web/ort.wasm.min.js";
const ORT_LOADER = "/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.mjs";
// Served gzip-encoded by the gateway under the runtime's own version (app/routes/edge_files.py).
const ortWasmUrl = (version) => "/vendor/onnxruntime-web/" + version + "/ort-wasm-simd-threaded.wasm";
const f32 = Math.fround;

/** An error with the fallback reason the page reports (classpulse.contracts.CAPTURE_FALLBACKS). */
function edgeError(reason, message) {
  const err = new Error(message);
  err.reason = reason;
  return err;
}

// --- OpenCV-exact 8-bit image operations ---------------------------------------------------

// --- the detector ------------------------------------------------------------------------
function loadScript(src) {
  return new Promise(function (resolve, reject) {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(edgeError("model_load_failed", "couldn't load " + src));
    document.head.appendChild(script);
  });
}

let ortReady = null;

/** onnxruntime-web's WebAssembly backend, one thread (no cross-origin isolation needed). */
function loadRuntime() {
  if (typeof WebAssembly !== "object") {
    return Promise.reject(edgeError("unsupported", "this browser has no WebAssembly"));
  }
  if (!ortReady) {
    ortReady = (window.ort ? Promise.resolve() : loadScript(ORT_SCRIPT)).then(function () {
      const ort = window.ort;
      ort.env.logLevel = "error";
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      ort.env.wasm.wasmPaths = { mjs: ORT_LOADER, wasm: ortWasmUrl(ort.env.versions.web) };
      return ort;
    });
    ortReady.catch(() => (ortReady = null)); // a later call may try again
  }
  return ortReady;
}

async function fetchOk(url, kind) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw edgeError("model_load_failed", url + ": HTTP " + response.status);
  return kind === "json" ? response.json() : response.arrayBuffer();
}

class FaceDetector {
  constructor(ort, session, contract) {
    const c = contract;
    const spec = c.detector || {};
    if (c.kind !== "face_detector" || c.input_height !== c.input_width) {
      throw edgeError("model_load_failed", c.name + " is not a square-input face detector");
    }
    this.ort = ort;
    this.session = session;
    this.contract = c;
    this.size = c.input_height;
    this.anchors = ssdAnchors(this.size, spec.strides, spec.anchors_per_stride, spec.anchor_offset ?? 0.5);
    this.numAnchors = this.anchors.length / 2;
    this.regScale = Number(spec.regressor_scale ?? this.size);
    this.numKeypoints = Number(spec.num_keypoints ?? 6);
    this.scoreClip = Number(spec.score_clip ?? 100);
    this.iou = Number((spec.nms && spec.nms.iou_threshold) ?? 0.3);
    this.outputs = spec.outputs || { regressors: "regressors", scores: "scores" };
    this.rgb = c.colour === "rgb";
    this.nchw = c.layout === "NCHW";
    this.mul = f32(1 / c.std);
    this.add = f32(-c.mean / c.std);
    this.setScoreThreshold(Number(spec.min_score_thresh ?? 0.5));
    this.minFaceSize = 20;
    this.maxFaces = 32;
    this.input = new Float32Array(3 * this.size * this.size);
    this.queue = Promise.resolve(); // one run at a time: the input buffer and session are shared
  }

  /** Free the model's WebAssembly memory (after any detection in progress). */
  release() {
    this.queue = this.queue.then(() => this.session.release());
    return this.queue;
  }

  setScoreThreshold(t) {
    // On logits, as the worker does: no sigmoid for thousands of anchors.
    this.scoreThreshold = t;
    this.logitThreshold = f32(Math.log(t / (1 - t)));
  }

  /** Letterbox an RGBA frame into the model's input, as worker/detector.py does: keep the
   * aspect ratio, pad evenly with black. Returns [scale, padX, padY]. */
  letterbox(rgba, width, height) {
    const size = this.size;
    const scale = size / Math.max(width, height);
    const nw = Math.max(1, roundHalfEven(width * scale));
    const nh = Math.max(1, roundHalfEven(height * scale));
    const small = resizeLinear(rgba, width, height, 4, nw, nh);
    const padX = Math.floor((size - nw) / 2);
    const padY = Math.floor((size - nh) / 2);
    const input = this.input;
    input.fill(this.add);
    const order = this.rgb ? [0, 1, 2] : [2, 1, 0];
    const plane = size * size;
    for (let y = 0; y < nh; y++) {
      for (let x = 0; x < nw; x++) {
        const s = (y * nw + x) * 4;
        const p = (y + padY) * size + (x + padX);
        for (let c = 0; c < 3; c++) {
          const v = f32(f32(small[s + order[c]] * this.mul) + this.add);
          input[this.nchw ? c * plane + p : p * 3 + c] = v;
        }
      }
    }
    return [scale, padX, padY];
  }

  /** Faces in an RGBA frame: [{box: [x, y, w, h], score, keypoints: [[x, y] × 6]}] in frame
   * pixels, and the time it took (letterbox, model, decoding) in ms. */
  detect(rgba, width, height) {
    const run = this.queue.then(() => this.detectNow(rgba, width, height));
    this.queue = run.catch(() => undefined);
    return run;
  }

  async detectNow(rgba, width, height) {
    const t0 = performance.now();
    const [scale, padX, padY] = this.letterbox(rgba, width, height);
    const dims = this.nchw ? [1, 3, this.size, this.size] : [1, this.size, this.size, 3];
    const feeds = {};
    feeds[this.contract.input_name] = new this.ort.Tensor("float32", this.input, dims);
    const result = await this.session.run(feeds);
    const regs = result[this.outputs.regressors].data;
    const logits = result[this.outputs.scores].data;
    const faces = this.decode(regs, logits, width, height, scale, padX, padY);
    Object.values(result).forEach((t) => {
      if (t.dispose) t.dispose();
    });
    return { faces: faces, ms: performance.now() - t0 };
  }

  decode(regs, logits, width, height, scale, padX, padY) {
    const per = regs.length / this.numAnchors;
    const k = this.numKeypoints;
    const s = this.regScale;
    const cands = [];
    for (let a = 0; a < this.numAnchors; a++) {
      const logit = logits[a];
      if (!(logit > this.logitThreshold)) continue;
      const clipped = Math.min(Math.max(logit, -this.scoreClip), this.scoreClip);
      const score = f32(1 / (1 + Math.exp(-clipped)));
      const r = a * per;
      const ax = this.anchors[2 * a];
      const ay = this.anchors[2 * a + 1];
      const cx = f32(f32(regs[r] / s) + ax);
      const cy = f32(f32(regs[r + 1] / s) + ay);
      const bw = f32(regs[r + 2] / s);
      const bh = f32(regs[r + 3] / s);
      const extra = [];
      for (let j = 0; j < k; j++) {
        extra.push(f32(f32(regs[r + 4 + 2 * j] / s) + ax), f32(f32(regs[r + 5 + 2 * j] / s) + ay));
      }
      const box = [f32(cx - f32(bw / 2)), f32(cy - f32(bh / 2)), f32(cx + f32(bw / 2)), f32(cy + f32(bh / 2))];
      cands.push({ box: box, score: score, extra: extra });
    }
    // Normalised letterbox coordinates -> frame pixels.
    const toPx = f32(this.size / scale);
    const offX = f32(padX / scale);
    const offY = f32(padY / scale);
    const faces = [];
    weightedNms(cands, this.iou)
      .slice(0, this.maxFaces)
      .forEach((m) => {
        const x1 = Math.max(0, f32(f32(m.box[0] * toPx) - offX));
        const y1 = Math.max(0, f32(f32(m.box[1] * toPx) - offY));
        const x2 = Math.min(width, f32(f32(m.box[2] * toPx) - offX));
        const y2 = Math.min(height, f32(f32(m.box[3] * toPx) - offY));
        if (x2 - x1 < this.minFaceSize || y2 - y1 < this.minFaceSize) return;
        const keypoints = [];
        for (let j = 0; j < k; j++) {
          keypoints.push([f32(f32(m.extra[2 * j] * toPx) - offX), f32(f32(m.extra[2 * j + 1] * toPx) - offY)]);
        }
        faces.push({ box: [x1, y1, f32(x2 - x1), f32(y2 - y1)], score: m.score, keypoints: keypoints });
      });
    return faces;
  }
}

// --- the wire format (docs/edge-wire.md) ---------------------------------------------------

async function load(url) {
  const ort = await loadRuntime();
  let model;
  let contract;
  try {
    [model, contract] = await Promise.all([fetchOk(url, "bytes"), fetchOk(url.replace(/\.onnx$/, ".json"), "json")]);
  } catch (err) {
    throw err.reason ? err : edgeError("model_load_failed", String(err));
  }
  let session;
  try {
    session = await ort.InferenceSession.create(new Uint8Array(model), {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
  } catch (err) {
    const text = String((err && err.message) || err);
    throw edgeError(/SIMD|WebAssembly|not supported/i.test(text) ? "unsupported" : "model_load_failed", text);
  }
  const detector = new FaceDetector(ort, session, contract);
  // The first run is much slower (allocations, lazy setup): run it before timing anything.
  await detector.detect(new Uint8ClampedArray(64 * 48 * 4), 64, 48);
  return detector;
}

window.ClassPulseEdge = {
  load: load,
  encodeFaces: encodeFaces,
  cropFaces: cropFaces,
  packCrops: packCrops,
  // For tests: the OpenCV-exact pieces on their own.
  resizeLinear: resizeLinear,
  greyRegion: greyRegion,
  squareCropBox: squareCropBox,
  headPose: headPose, // what encodeFaces sends as each face's yaw and pitch
};
