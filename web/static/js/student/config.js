/* What the student page sends and how, until the server's config message says otherwise, and
 * how that message is checked. No DOM: unit-tested in web/tests/. */

export const DEFAULT_CONFIG = {
  fps: 2,
  max_fps: 5,
  max_in_flight: 2,
  width: 320,
  height: 240,
  jpeg_quality: 0.7,
  // Edge capture (docs/edge-wire.md); a server that doesn't say "edge" gets JPEG frames.
  capture: "frames",
  detector_url: "/models/face_detection_short_range.onnx",
  // false: the school requires edge capture, and a page that can't run the detector sends
  // nothing (never frames). Under the policy "off" frames are at most presence_width x height.
  frames_allowed: true,
  presence_width: 192,
  presence_height: 144,
  crop_size: 64,
  crop_scale: 1.1,
  max_faces: 32,
  min_face_size: 20,
  detector_iou_threshold: 0.3,
  detector_score_threshold: null,
};

const NUMBERS = [
  "fps",
  "max_fps",
  "max_in_flight",
  "width",
  "height",
  "jpeg_quality",
  "crop_size",
  "crop_scale",
  "max_faces",
  "min_face_size",
  "detector_iou_threshold",
  "presence_width",
  "presence_height",
];

/** The server's config message on top of the current config, each value checked. */
export function nextConfig(config, msg) {
  const next = Object.assign({}, config);
  for (const key of NUMBERS) {
    const value = Number(msg[key]);
    if (msg[key] !== undefined && msg[key] !== null && Number.isFinite(value) && value >= 0) next[key] = value;
  }
  next.max_in_flight = Math.max(1, Math.floor(next.max_in_flight));
  next.width = Math.max(16, Math.floor(next.width)) || 320;
  next.height = Math.max(16, Math.floor(next.height)) || 240;
  next.presence_width = Math.max(16, Math.floor(next.presence_width)) || 192;
  next.presence_height = Math.max(16, Math.floor(next.presence_height)) || 144;
  // Absent (a server from before it): frames are a page's fallback, as always.
  next.frames_allowed = msg.frames_allowed !== false;
  next.jpeg_quality = Math.min(1, Math.max(0.1, next.jpeg_quality));
  // The faces message carries these in one byte each.
  next.crop_size = Math.min(255, Math.max(1, Math.floor(next.crop_size)));
  next.max_faces = Math.min(255, Math.floor(next.max_faces));
  next.crop_scale = Math.max(1, next.crop_scale);
  // The worker's detector settings (null score threshold: the model's own, from its contract).
  const score = Number(msg.detector_score_threshold);
  next.detector_score_threshold = msg.detector_score_threshold !== null && score > 0 && score < 1 ? score : null;
  next.detector_iou_threshold = Math.min(1, next.detector_iou_threshold);
  // No "capture" (a server from before edge capture): JPEG frames, as always.
  next.capture = msg.capture === "edge" ? "edge" : "frames";
  if (typeof msg.detector_url === "string" && msg.detector_url.startsWith("/")) next.detector_url = msg.detector_url;
  return next;
}
