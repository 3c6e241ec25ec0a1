/* Student page: consent first, then a display name, then (only then) the camera. Each capture
 * goes to the server as one binary message, with at most max_in_flight unacknowledged; when the
 * window is full the page skips the capture instead of queueing frames. The message is a JPEG
 * (capture "frames"), or, when the server asks for edge capture, the faces message that edge.js
 * builds on this device: face boxes and small grey face crops, never the picture.
 * The page's entry module; each job lives in a module under student/ (edge_capture.js for the
 * on-device detector). */

import { renderCapture } from "./edge_capture.js";
import { startCamera, stopCamera } from "./student/camera.js";
import { renderCounts } from "./student/counts.js";
import { enterStream, loadInvitation, loadStored } from "./student/join.js";
import { withdraw } from "./student/live.js";
import { $, STORE_KEY, state } from "./student/state.js";

$("start").addEventListener("click", () => startCamera());
$("stop").addEventListener("click", () => stopCamera());
$("withdraw").addEventListener("click", withdraw);
$("rejoin").addEventListener("click", () => {
  sessionStorage.removeItem(STORE_KEY);
  location.reload();
});

renderCapture();
renderCounts();
state.join = loadStored();
if (state.join)
  enterStream(); // a reload: the camera waits for the Start button again
else loadInvitation();
