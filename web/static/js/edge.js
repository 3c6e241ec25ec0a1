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
 * Exposed as window.ClassPulseEdge; onnxruntime-web is loaded only when a page asks for it. */
(function () {
  "use strict";

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
  /** Round half to even: Python's round() and OpenCV's cvRound (lrint). */
  function roundHalfEven(v) {
    const f = Math.floor(v);
    const d = v - f;
    if (d !== 0.5) return d < 0.5 ? f : f + 1;
    return f % 2 === 0 ? f : f + 1;
  }

  /** Source index and 11-bit fixed-point weights per output position, as cv::resize computes
   * them for INTER_LINEAR: half-pixel centres, float32 arithmetic, weights rounded to 1/2048.
   * Columns are clamped at the borders (weight 1 on the edge pixel); rows are not: OpenCV keeps
   * the weights and clamps the row index, which rounds differently on border rows. */
  function linearTable(src, dst, clampWeights) {
    const scale = src / dst;
    const index = new Int32Array(dst);
    const w0 = new Int32Array(dst);
    const w1 = new Int32Array(dst);
    for (let d = 0; d < dst; d++) {
      let f = f32((d + 0.5) * scale - 0.5);
      let s = Math.floor(f);
      f = f32(f - s);
      if (clampWeights && s < 0) {
        f = 0;
        s = 0;
      }
      if (clampWeights && s >= src - 1) {
        f = 0;
        s = src - 1;
      }
      index[d] = s;
      w0[d] = roundHalfEven(f32(f32(1 - f) * 2048));
      w1[d] = roundHalfEven(f32(f * 2048));
    }
    return { index: index, w0: w0, w1: w1 };
  }

  /** cv2.resize(src, (dw, dh), interpolation=INTER_LINEAR) for uint8 images of ``cn``
   * interleaved channels: a horizontal pass into 32-bit rows (weights × 2048), then OpenCV's
   * vertical pass, which shifts each row right by 4, keeps the high 16 bits of the product with
   * the row weight and rounds the sum off by 2 bits (what its SIMD code does, bit for bit). */
  function resizeLinear(src, sw, sh, cn, dw, dh) {
    const xs = linearTable(sw, dw, true);
    const ys = linearTable(sh, dh, false);
    const rowLen = dw * cn;
    const rows = new Array(sh).fill(null);
    function hrow(y) {
      if (rows[y]) return rows[y];
      const out = new Int32Array(rowLen);
      const base = y * sw * cn;
      for (let dx = 0; dx < dw; dx++) {
        const s0 = base + xs.index[dx] * cn;
        const s1 = base + Math.min(xs.index[dx] + 1, sw - 1) * cn;
        const a0 = xs.w0[dx];
        const a1 = xs.w1[dx];
        for (let c = 0; c < cn; c++) out[dx * cn + c] = src[s0 + c] * a0 + src[s1 + c] * a1;
      }
      rows[y] = out;
      return out;
    }
    const dst = new Uint8Array(rowLen * dh);
    for (let dy = 0; dy < dh; dy++) {
      const sy = ys.index[dy];
      const r0 = hrow(Math.min(Math.max(sy, 0), sh - 1));
      const r1 = hrow(Math.min(Math.max(sy + 1, 0), sh - 1));
      const b0 = ys.w0[dy];
      const b1 = ys.w1[dy];
      const o = dy * rowLen;
      for (let i = 0; i < rowLen; i++) {
        const v = ((((r0[i] >> 4) * b0) >> 16) + (((r1[i] >> 4) * b1) >> 16) + 2) >> 2;
        dst[o + i] = v < 0 ? 0 : Math.min(v, 255);
      }
    }
    return dst;
  }

  /** OpenCV's RGB → grey for 8-bit images: BT.601 weights in 15-bit fixed point, rounded. */
  function greyRegion(rgba, width, x1, y1, x2, y2) {
    const w = x2 - x1;
    const out = new Uint8Array(w * (y2 - y1));
    for (let y = y1; y < y2; y++) {
      let i = (y * width + x1) * 4;
      let o = (y - y1) * w;
      for (let x = x1; x < x2; x++, i += 4, o++) {
        out[o] = (rgba[i] * 9798 + rgba[i + 1] * 19235 + rgba[i + 2] * 3735 + 16384) >> 15;
      }
    }
    return out;
  }

  /** worker.classifier.square_crop_box: a square around the box's centre, ``scale`` × its
   * longer side, clipped to the frame, ends rounded as floor(v + 0.5). */
  function squareCropBox(box, frameW, frameH, scale) {
    const [x, y, w, h] = box;
    const side = Math.max(w, h) * scale;
    const cx = x + w / 2;
    const cy = y + h / 2;
    const x1 = Math.floor(Math.max(0, cx - side / 2) + 0.5);
    const y1 = Math.floor(Math.max(0, cy - side / 2) + 0.5);
    const x2 = Math.floor(Math.min(frameW, cx + side / 2) + 0.5);
    const y2 = Math.floor(Math.min(frameH, cy + side / 2) + 0.5);
    return [x1, y1, Math.max(x1 + 1, x2), Math.max(y1 + 1, y2)];
  }

  /** One grey crop of side ``size`` per face, face after face (the classifier's input). */
  function cropFaces(rgba, width, height, faces, size, scale) {
    const out = new Uint8Array(faces.length * size * size);
    faces.forEach(function (face, i) {
      let [x1, y1, x2, y2] = squareCropBox(face.box, width, height, scale);
      x1 = Math.min(x1, width - 1); // a box at the very edge: keep at least one pixel
      y1 = Math.min(y1, height - 1);
      x2 = Math.min(Math.max(x2, x1 + 1), width);
      y2 = Math.min(Math.max(y2, y1 + 1), height);
      const region = greyRegion(rgba, width, x1, y1, x2, y2);
      out.set(resizeLinear(region, x2 - x1, y2 - y1, 1, size, size), i * size * size);
    });
    return out;
  }

  // --- BlazeFace decoding (worker/detector.py) -----------------------------------------------
  /** MediaPipe SSD anchor centres, normalised; consecutive equal strides share a grid. */
  function ssdAnchors(size, strides, perStride, offset) {
    const out = [];
    let i = 0;
    while (i < strides.length) {
      const stride = strides[i];
      let count = 0;
      while (i < strides.length && strides[i] === stride) count += perStride[i++];
      const cells = Math.ceil(size / stride);
      for (let y = 0; y < cells; y++) {
        for (let x = 0; x < cells; x++) {
          for (let k = 0; k < count; k++) out.push(f32((x + offset) / cells), f32((y + offset) / cells));
        }
      }
    }
    return new Float32Array(out);
  }

  /** MediaPipe's weighted NMS: overlapping detections averaged, weighted by score; each cluster
   * keeps its best score. ``boxes`` x1, y1, x2, y2; ``extra`` (keypoints) averaged alike. */
  function weightedNms(cands, iou) {
    const order = cands.slice().sort((a, b) => b.score - a.score);
    const alive = order.map(() => true);
    const threshold = f32(iou);
    const area = (b) => f32(f32(b[2] - b[0]) * f32(b[3] - b[1]));
    const out = [];
    for (let i = 0; i < order.length; i++) {
      if (!alive[i]) continue;
      const bi = order[i].box;
      const cluster = [];
      for (let j = 0; j < order.length; j++) {
        if (!alive[j]) continue;
        const bj = order[j].box;
        const iw = Math.max(f32(Math.min(bi[2], bj[2]) - Math.max(bi[0], bj[0])), 0);
        const ih = Math.max(f32(Math.min(bi[3], bj[3]) - Math.max(bi[1], bj[1])), 0);
        const inter = f32(iw * ih);
        const overlap = f32(inter / Math.max(f32(f32(area(bi) + area(bj)) - inter), 1e-9));
        if (j === i || overlap > threshold) cluster.push(j);
      }
      const box = [0, 0, 0, 0];
      const extra = new Array(order[i].extra.length).fill(0);
      let total = 0;
      cluster.forEach(function (j) {
        const w = order[j].score;
        total = f32(total + w);
        for (let k = 0; k < 4; k++) box[k] = f32(box[k] + f32(order[j].box[k] * w));
        for (let k = 0; k < extra.length; k++) extra[k] = f32(extra[k] + f32(order[j].extra[k] * w));
        alive[j] = false;
      });
      out.push({
        box: box.map((v) => f32(v / total)),
        score: order[i].score,
        extra: extra.map((v) => f32(v / total)),
      });
    }
    return out;
  }

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
  const MAGIC = [0x43, 0x50, 0x46, 0x4d]; // "CPFM"
  const VERSION = 1;
  const HEADER = 24;
  const FACE_BYTES = 68;
  const KEYPOINTS = 6;

  const FLAG_CROPS = 1;
  const FLAG_PACKED = 2;

  /** One faces message: boxes, scores and keypoints, then (``crops`` given) the grey crops,
   * packed (``packed``: what packCrops made of them) or as they are. */
  function encodeFaces(width, height, faces, crops, cropSize, detectorMs, captureMs, packed) {
    const n = faces.length;
    const size = crops ? cropSize : 0;
    const tail = crops ? packed || crops : null;
    const buffer = new ArrayBuffer(HEADER + FACE_BYTES * n + (tail ? tail.length : 0));
    const view = new DataView(buffer);
    MAGIC.forEach((b, i) => {
      view.setUint8(i, b);
    });
    view.setUint8(4, VERSION);
    view.setUint8(5, crops ? (packed ? FLAG_CROPS | FLAG_PACKED : FLAG_CROPS) : 0);
    view.setUint8(6, n);
    view.setUint8(7, size);
    view.setUint16(8, width, true);
    view.setUint16(10, height, true);
    view.setFloat32(12, Math.min(Math.max(detectorMs, 0), 59999), true);
    view.setFloat64(16, captureMs, true);
    faces.forEach(function (face, i) {
      let o = HEADER + i * FACE_BYTES;
      const values = face.box.concat([face.score]);
      for (let j = 0; j < KEYPOINTS; j++) {
        const p = face.keypoints[j] || [0, 0];
        values.push(p[0], p[1]);
      }
      values.forEach(function (v) {
        view.setFloat32(o, v, true);
        o += 4;
      });
    });
    if (tail) new Uint8Array(buffer, HEADER + FACE_BYTES * n).set(tail);
    return buffer;
  }

  /** The crops packed losslessly for the wire (docs/edge-wire.md, flag bit 1): each row as its
   * differences from the pixel on the left (PNG's "Sub" filter, modulo 256), then one raw
   * deflate stream. Resolves to null where the browser has no CompressionStream, or when packing
   * would not make them smaller (the page then sends them as they are). */
  async function packCrops(crops, cropSize) {
    if (typeof CompressionStream !== "function" || !crops || crops.length === 0) return null;
    const filtered = new Uint8Array(crops.length);
    for (let i = 0; i < crops.length; i++) {
      filtered[i] = i % cropSize === 0 ? crops[i] : (crops[i] - crops[i - 1]) & 0xff;
    }
    const stream = new Blob([filtered]).stream().pipeThrough(new CompressionStream("deflate-raw"));
    const packed = new Uint8Array(await new Response(stream).arrayBuffer());
    return packed.length < crops.length ? packed : null;
  }

  /** Load the runtime, the detector at ``url`` and its contract (``url`` with .json). */
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
  };
})();
