/* The faces message (docs/edge-wire.md), version 2: boxes, scores, keypoints and head yaw and
 * pitch (lib/head_pose.js, the twin of the worker's), then the grey crops, packed or as they
 * are. */

import { headPose } from "../lib/head_pose.js";

const MAGIC = [0x43, 0x50, 0x46, 0x4d]; // "CPFM"
const VERSION = 2;
const HEADER = 24;
const FACE_BYTES = 76; // 19 float32: box, score, 6 keypoints (x, y), yaw, pitch
const KEYPOINTS = 6;

const FLAG_CROPS = 1;
const FLAG_PACKED = 2;

/** One faces message: boxes, scores, keypoints and each face's yaw and pitch (computed here
 * from its keypoints), then (``crops`` given) the grey crops, packed (``packed``: what
 * packCrops made of them) or as they are. */
export function encodeFaces(width, height, faces, crops, cropSize, detectorMs, captureMs, packed) {
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
    const points = [];
    for (let j = 0; j < KEYPOINTS; j++) {
      const p = face.keypoints[j] || [0, 0];
      points.push(p);
      values.push(p[0], p[1]);
    }
    values.push(...headPose(face.box, points));
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
export async function packCrops(crops, cropSize) {
  if (typeof CompressionStream !== "function" || !crops || crops.length === 0) return null;
  const filtered = new Uint8Array(crops.length);
  for (let i = 0; i < crops.length; i++) {
    filtered[i] = i % cropSize === 0 ? crops[i] : (crops[i] - crops[i - 1]) & 0xff;
  }
  const stream = new Blob([filtered]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  const packed = new Uint8Array(await new Response(stream).arrayBuffer());
  return packed.length < crops.length ? packed : null;
}
