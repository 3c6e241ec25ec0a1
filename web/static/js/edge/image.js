/* OpenCV-exact 8-bit image operations for edge capture: INTER_LINEAR resize and BT.601 grey as
 * cv2 computes them for uint8 images, so a crop cut here equals the one the worker would cut
 * from the same pixels (worker/classifier.py). Pure functions, unit-tested against cv2. */

const f32 = Math.fround;

/** Round half to even: Python's round() and OpenCV's cvRound (lrint). */
export function roundHalfEven(v) {
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
export function resizeLinear(src, sw, sh, cn, dw, dh) {
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
export function greyRegion(rgba, width, x1, y1, x2, y2) {
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
export function squareCropBox(box, frameW, frameH, scale) {
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
export function cropFaces(rgba, width, height, faces, size, scale) {
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
