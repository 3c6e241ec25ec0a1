/* BlazeFace decoding as worker/detector.py does it: anchors and weighted NMS, in float32. */

const f32 = Math.fround;

/** MediaPipe SSD anchor centres, normalised; consecutive equal strides share a grid. */
export function ssdAnchors(size, strides, perStride, offset) {
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
export function weightedNms(cands, iou) {
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
