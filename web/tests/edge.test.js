// Edge capture's OpenCV-exact pieces (edge/image.js) against values cv2 4.14 computed
// (opencv_golden.json), and the faces message layout (edge/wire.js, docs/edge-wire.md).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { inflateRawSync } from "node:zlib";
import { cropFaces, greyRegion, resizeLinear, squareCropBox } from "../static/js/edge/image.js";
import { encodeFaces, packCrops } from "../static/js/edge/wire.js";
import { headPose } from "../static/js/lib/head_pose.js";

const Edge = { cropFaces, greyRegion, resizeLinear, squareCropBox, encodeFaces, packCrops };
const golden = JSON.parse(readFileSync(new URL("opencv_golden.json", import.meta.url), "utf8"));
const bytes = (a) => Uint8Array.from(a);

test("resizeLinear equals cv2.resize INTER_LINEAR, grey, down and up", () => {
  const g = golden.grey;
  assert.deepEqual(Array.from(Edge.resizeLinear(bytes(g.src), g.sw, g.sh, 1, 5, 7)), g.down);
  assert.deepEqual(Array.from(Edge.resizeLinear(bytes(g.src), g.sw, g.sh, 1, 20, 17)), g.up);
});

test("resizeLinear equals cv2.resize INTER_LINEAR on three channels", () => {
  const c = golden.rgb;
  assert.deepEqual(Array.from(Edge.resizeLinear(bytes(c.src), c.sw, c.sh, 3, 4, 6)), c.down);
});

test("resizeLinear to the same size is the identity", () => {
  const g = golden.grey;
  assert.deepEqual(Array.from(Edge.resizeLinear(bytes(g.src), g.sw, g.sh, 1, g.sw, g.sh)), g.src);
});

test("greyRegion equals cv2.cvtColor RGB2GRAY on the region", () => {
  const r = golden.greyRegion;
  const [x1, y1, x2, y2] = r.box;
  assert.deepEqual(Array.from(Edge.greyRegion(bytes(r.rgba), r.w, x1, y1, x2, y2)), r.grey);
});

test("squareCropBox: a square around the centre, clipped to the frame, never empty", () => {
  assert.deepEqual(Array.from(Edge.squareCropBox([10, 10, 20, 10], 100, 100, 1)), [10, 5, 30, 25]);
  assert.deepEqual(Array.from(Edge.squareCropBox([0, 0, 10, 10], 100, 100, 2)), [0, 0, 15, 15]);
  assert.deepEqual(Array.from(Edge.squareCropBox([99.9, 99.9, 0, 0], 100, 100, 1)), [100, 100, 101, 101]);
});

test("cropFaces: the face's square region in grey, resized to size, face after face", () => {
  const r = golden.greyRegion; // its grey region: rows 2..4, columns 1..5 of the picture
  const faces = [{ box: [1, 2, 3, 3] }, { box: [1, 2, 3, 3] }]; // a 3 x 3 square at (1, 2)
  const crops = Edge.cropFaces(bytes(r.rgba), r.w, r.h, faces, 3, 1);
  const expected = [0, 1, 2].flatMap((row) => r.grey.slice(row * 5, row * 5 + 3));
  assert.deepEqual(Array.from(crops), expected.concat(expected));
});

function face(i) {
  return {
    box: [i, i + 1, 10, 12],
    score: 0.5,
    keypoints: [
      [1, 2],
      [3, 4],
    ],
  };
}

test("encodeFaces: header, one 76-byte record per face (version 2), crops after", () => {
  const crops = new Uint8Array(2 * 3 * 3).map((_, i) => i);
  const buffer = Edge.encodeFaces(640, 480, [face(0), face(5)], crops, 3, 12.5, 1700000000123, null);
  const view = new DataView(buffer);
  assert.equal(buffer.byteLength, 24 + 2 * 76 + crops.length);
  assert.equal(String.fromCharCode(...new Uint8Array(buffer, 0, 4)), "CPFM");
  assert.equal(view.getUint8(4), 2, "version");
  assert.equal(view.getUint8(5), 1, "flags: crops, not packed");
  assert.equal(view.getUint8(6), 2, "faces");
  assert.equal(view.getUint8(7), 3, "crop size");
  assert.equal(view.getUint16(8, true), 640);
  assert.equal(view.getUint16(10, true), 480);
  assert.equal(view.getFloat32(12, true), 12.5);
  assert.equal(view.getFloat64(16, true), 1700000000123);
  const second = 24 + 76;
  assert.equal(view.getFloat32(second, true), 5, "second face's x");
  assert.equal(view.getFloat32(second + 16, true), 0.5, "score after the box");
  assert.equal(view.getFloat32(second + 20, true), 1, "first keypoint x");
  assert.equal(view.getFloat32(second + 64, true), 0, "missing keypoints are zero");
  const [yaw, pitch] = headPose(face(5).box, face(5).keypoints.concat(Array(4).fill([0, 0])));
  assert.equal(view.getFloat32(second + 68, true), Math.fround(yaw), "yaw, from the keypoints");
  assert.equal(view.getFloat32(second + 72, true), Math.fround(pitch), "pitch");
  assert.deepEqual(Array.from(new Uint8Array(buffer, 24 + 2 * 76)), Array.from(crops));
});

test("encodeFaces: no crops when emotions are off, the detector time capped", () => {
  const view = new DataView(Edge.encodeFaces(320, 240, [face(0)], null, 64, 1e9, 0, null));
  assert.equal(view.byteLength, 24 + 76);
  assert.equal(view.getUint8(5), 0);
  assert.equal(view.getUint8(7), 0);
  assert.equal(view.getFloat32(12, true), 59999);
});

test("packCrops: Sub-filtered rows in raw deflate, lossless", async () => {
  const size = 8;
  const crops = new Uint8Array(2 * size * size).map((_, i) => (i * 7) % 256);
  const packed = await Edge.packCrops(crops, size);
  assert.ok(packed && packed.length < crops.length, "a smooth ramp packs smaller");
  const rows = inflateRawSync(Buffer.from(packed));
  const out = new Uint8Array(rows.length);
  for (let r = 0; r < rows.length / size; r++) {
    for (let x = 0; x < size; x++) {
      const i = r * size + x;
      out[i] = (rows[i] + (x ? out[i - 1] : 0)) % 256;
    }
  }
  assert.deepEqual(Array.from(out), Array.from(crops));
  const view = new DataView(Edge.encodeFaces(1, 1, [face(0), face(1)], crops, size, 0, 0, packed));
  assert.equal(view.getUint8(5), 3, "flags: crops, packed");
});
