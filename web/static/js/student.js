/* Student page: consent first, then a display name, then (only then) the camera. Each capture
 * goes to the server as one binary message, with at most max_in_flight unacknowledged; when the
 * window is full the page skips the capture instead of queueing frames. The message is a JPEG
 * (capture "frames"), or, when the server asks for edge capture, the faces message that edge.js
 * builds on this device: face boxes and small grey face crops, never the picture. */
(function () {
  "use strict";
  const CP = window.ClassPulse;
  const root = document.getElementById("student");
  const code = root.dataset.joinCode;
  const STORE_KEY = "classpulse.join." + code;
  const ACK_TIMEOUT_MS = 10000; // a full window with no ack this long means a stuck socket
  const PRESENCE_TEXT = {
    present: "connected",
    waiting: "not connected",
    no_face: "no face",
    camera_off: "camera off",
    disconnected: "disconnected",
    withdrawn: "withdrawn",
  };

  const $ = (id) => document.getElementById(id);
  const video = $("preview");
  const canvas = document.createElement("canvas");
  const connState = $("conn-state");
  const streamError = $("stream-error");

  let join = null; // {token, student_id, session_id, session_title, display_name, expires_at}
  let consentVersion = null;
  let config = {
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
  let stream = null;
  let starting = null;
  let captureTimer = null;
  let encoding = false;
  let finished = false; // withdrawn or expired: no camera, no reconnect
  let declined = false; // consent declined: joined without analysis

  let configSeen = false; // the server has said what to send (or stayed silent): see captureText
  // Per connection: frames are numbered from 1 and acknowledged in order.
  let configured = false;
  let sentSeq = 0;
  let ackSeq = 0;
  let lastAckAt = 0;
  let sessionOver = false;
  const selfState = { presence: null, emotion: null }; // latest updates about this student

  // This student's frames as this tab sent them, kept across reloads of the tab (with the join)
  // so that what the server stored about the student never exceeds what this page says it sent:
  // acked + dropped <= sent, and frames analysed and kept <= sent (<= acked while the page
  // stays open; a reload can lose the acks of the frames in flight at that moment).
  const counts = { sent: 0, acked: 0, dropped: 0, skipped: 0, droppedBy: {} };
  const COUNTS_KEY = STORE_KEY + ".counts";
  const STATS_EVERY_MS = 5000;
  let capturedSinceReport = 0; // reported to the server, which counts frames per student

  // --- steps ---------------------------------------------------------------------------------
  function step(id) {
    ["consent-step", "declined-step", "name-step", "stream-step", "expired-step"].forEach(function (s) {
      CP.show($(s), s === id);
    });
  }

  function loadStored() {
    try {
      const stored = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
      if (stored && stored.token && stored.expires_at > Date.now()) return stored;
    } catch (_err) {
      /* unreadable: start over */
    }
    sessionStorage.removeItem(STORE_KEY);
    return null;
  }

  function joinFailure(status, fallback) {
    // Unknown codes and ended classes get the same answer (no oracle for code guessing).
    if (status === 404 || status === 410)
      return "This join link is unknown, or its class has ended. Check the link with your teacher.";
    if (status === 429) return "Too many attempts. Wait a minute, then try again.";
    return fallback;
  }

  async function loadInvitation() {
    let result;
    try {
      result = await CP.api("/api/join/" + encodeURIComponent(code));
    } catch (_err) {
      CP.setError($("join-error"), "Can't reach the server. Check your connection and reload.");
      return;
    }
    if (!result.ok || !result.data) {
      CP.setError($("join-error"), joinFailure(result.status, CP.errorText(result, "This link can't be used.")));
      return;
    }
    const info = result.data;
    $("class-title").textContent = info.session_title;
    $("class-teacher").textContent = info.teacher ? "Teacher: " + info.teacher : "";
    consentVersion = info.consent_version;
    if (info.emotion_mode)
      $("consent-mode").textContent = "At this school now: " + (MODE_TEXT[info.emotion_mode] || info.emotion_mode);
    $("consent-version").textContent = String(info.consent_version);
    const text = $("consent-text");
    text.replaceChildren.apply(text, noticeNodes(info.consent_text));
    step("consent-step");
  }

  /** The consent notice as DOM nodes, its text only ever set as text (never parsed as HTML).
   * Its format (app/consent.py): blocks separated by a blank line; a block's first line is its
   * heading; "- " starts a list item and an indented line continues it; other lines run on
   * into one paragraph. */
  function noticeNodes(notice) {
    const nodes = [];
    const blocks = String(notice || "")
      .replace(/\r\n?/g, "\n")
      .split(/\n\s*\n/);
    blocks.forEach(function (block) {
      const lines = block.split("\n").filter((line) => line.trim());
      if (lines.length > 1 && !/^- /.test(lines[0])) {
        const heading = document.createElement("h3");
        heading.textContent = lines.shift().trim();
        nodes.push(heading);
      }
      let para = null;
      let list = null;
      let item = null;
      lines.forEach(function (line) {
        if (/^- /.test(line)) {
          if (!list) {
            list = document.createElement("ul");
            nodes.push(list);
          }
          item = list.appendChild(document.createElement("li"));
          item.textContent = line.slice(2).trim();
          para = null;
        } else if (item && /^\s/.test(line)) {
          item.textContent += " " + line.trim();
        } else {
          list = item = null;
          if (!para) {
            para = document.createElement("p");
            nodes.push(para);
          }
          para.textContent += (para.textContent ? " " : "") + line.trim();
        }
      });
    });
    return nodes;
  }

  $("consent-accept").addEventListener("click", function () {
    step("name-step");
    $("display-name").focus();
  });

  $("consent-decline").addEventListener("click", function () {
    // Declining is an answer too: the student joins (recorded as declined) and attends
    // without analysis; the camera never starts on this page.
    declined = true;
    step("name-step");
    CP.show($("declined-step"), true);
    $("join-submit").textContent = "Join without camera";
    $("display-name").focus();
  });

  $("name-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const name = $("display-name").value.trim();
    const error = $("join-error");
    if (!name) {
      CP.setError(error, "Type the name your teacher should see.");
      $("display-name").focus();
      return;
    }
    CP.setError(error, "");
    const button = $("join-submit");
    button.disabled = true;
    try {
      const result = await CP.api("/api/join/" + encodeURIComponent(code), {
        method: "POST",
        body: { display_name: name, consent: !declined, consent_version: consentVersion },
      });
      if (result.status === 409) {
        // The consent notice changed since it was shown: show the new one before joining.
        await loadInvitation();
        CP.setError(error, "The consent notice has changed. Please read it again.");
        return;
      }
      if (!result.ok || !result.data || !result.data.token) {
        CP.setError(
          error,
          joinFailure(result.status, CP.errorText(result, "Couldn't join (HTTP " + result.status + ").")),
        );
        return;
      }
      const d = result.data;
      join = {
        token: d.token,
        student_id: d.student_id,
        session_id: d.session_id,
        session_title: d.session_title,
        display_name: name,
        expires_at: Date.now() + (Number(d.expires_in) || 3600) * 1000,
        analysis: d.analysis !== false,
      };
      sessionStorage.setItem(STORE_KEY, JSON.stringify(join));
      enterStream();
      if (join.analysis) startCamera(); // consent and name given just now: that click asks for it
    } catch (_err) {
      CP.setError(error, "Can't reach the server. Check your connection and try again.");
    } finally {
      button.disabled = false;
    }
  });

  /** The counts this tab kept for this student before a reload. */
  function restoreCounts() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(COUNTS_KEY) || "null");
      if (!saved || saved.student_id !== join.student_id) return;
      ["sent", "acked", "dropped", "skipped"].forEach((k) => {
        counts[k] = Number(saved[k]) || 0;
      });
      counts.droppedBy = saved.droppedBy && typeof saved.droppedBy === "object" ? saved.droppedBy : {};
    } catch (_err) {
      /* unreadable: start from zero */
    }
  }

  function enterStream() {
    restoreCounts();
    renderCounts();
    CP.setError($("join-error"), "");
    if (join.session_title) $("class-title").textContent = join.session_title;
    $("self-name").textContent = join.display_name || "";
    step("stream-step");
    startPrivacyView();
    connect();
  }

  // --- camera --------------------------------------------------------------------------------
  function setButtons() {
    $("start").disabled = Boolean(stream) || finished || !analysing();
    $("stop").disabled = !stream;
    $("withdraw").disabled = finished;
    $("camera-state").textContent = !analysing()
      ? "You're attending without analysis: the camera stays off and nothing is sent."
      : stream
        ? "Camera on."
        : "Camera off: nothing is sent.";
    CP.show($("capture-mode"), analysing() && !finished);
  }

  function startCamera() {
    if (stream || finished || !analysing()) return Promise.resolve();
    if (!starting) starting = openCamera().finally(() => (starting = null));
    return starting;
  }

  // Browsers give the camera only to a secure context (HTTPS, or this computer itself): over
  // plain HTTP say so as the page opens, with the HTTPS link the server knows, not at "Start".
  const insecure = window.isSecureContext === false;
  if (insecure) {
    $("insecure-url").textContent = location.origin;
    CP.show($("insecure-context"), true);
  }

  async function openCamera() {
    if (insecure) {
      CP.setError(
        streamError,
        "The camera is blocked: this page was opened over plain HTTP, not HTTPS. See the note at the top of the page.",
      );
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      CP.setError(streamError, "This browser can't share the camera on this page (it needs HTTPS).");
      return;
    }
    let media;
    try {
      const size = cameraSize();
      media = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { width: { ideal: size.width }, height: { ideal: size.height }, facingMode: "user" },
      });
    } catch (err) {
      const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
      CP.setError(
        streamError,
        denied
          ? "Camera permission was denied. You can follow the class without it, or allow the camera in the browser's site settings and press Start."
          : "Couldn't start the camera: " + ((err && err.message) || err),
      );
      return;
    }
    if (finished) {
      media.getTracks().forEach((t) => {
        t.stop();
      });
      return;
    }
    stream = media;
    CP.setError(streamError, "");
    renderCapture();
    video.srcObject = stream;
    video.play().catch(function () {
      /* autoplay of a muted preview is allowed; ignore a rejected play() */
    });
    stream.getVideoTracks().forEach(function (track) {
      track.addEventListener("ended", () => stopCamera()); // unplugged or permission revoked
    });
    sendJson({ type: "camera", state: "on" });
    setButtons();
    scheduleCapture();
  }

  function stopCamera(notify) {
    clearTimeout(captureTimer);
    if (stream) {
      stream.getTracks().forEach((t) => {
        t.stop();
      });
      stream = null;
      video.srcObject = null;
      if (notify !== false) sendJson({ type: "camera", state: "off" });
    }
    renderCapture();
  }

  // --- capture loop --------------------------------------------------------------------------
  function currentFps() {
    const fps = Number(config.fps);
    const max = Number(config.max_fps) || fps;
    return Math.min(fps, max);
  }

  function scheduleCapture() {
    clearTimeout(captureTimer);
    if (!stream) return;
    const fps = currentFps();
    // fps 0 means the server paused this page: check again in a second for a new config.
    captureTimer = setTimeout(captureTick, fps > 0 ? 1000 / fps : 1000);
  }

  function captureTick() {
    scheduleCapture(); // keep the cadence independent of how long encoding takes
    const ws = live.open();
    if (!stream || !ws || !configured || !(currentFps() > 0)) return;
    // Edge capture asked for and the detector still loading: nothing leaves the device yet.
    if (config.capture === "edge" && edge.state === "loading") return;
    // Edge capture required and this page can't run the detector: nothing leaves the device.
    if (!sendingFaces() && !config.frames_allowed) return;
    capturedSinceReport += 1; // a capture due now, whether it is sent or skipped below
    const inFlight = sentSeq - ackSeq;
    if (encoding || inFlight >= config.max_in_flight) {
      counts.skipped += 1;
      renderCounts();
      if (inFlight > 0 && Date.now() - lastAckAt > ACK_TIMEOUT_MS) live.drop(4000, "ack timeout");
      return;
    }
    if (video.readyState < 2 || !video.videoWidth) return;
    if (sendingFaces()) captureFaces(ws);
    else captureJpeg(ws);
  }

  /** The box JPEG frames are fitted into: under the policy "off" only what presence needs (the
   * server's face detector sees no more of a frame), else config.width x height. */
  function frameBox() {
    return policyMode === "off"
      ? { width: config.presence_width, height: config.presence_height }
      : { width: config.width, height: config.height };
  }

  /** Capture "frames": the picture, fitted into frameBox(), as one JPEG. */
  function captureJpeg(ws) {
    // Fit the camera picture into the box without distorting faces.
    const box = frameBox();
    const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight, 1);
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    encoding = true;
    canvas.toBlob(
      function (blob) {
        encoding = false;
        if (!blob || live.open() !== ws || !stream) return;
        sendCapture(ws, blob);
      },
      "image/jpeg",
      config.jpeg_quality,
    );
  }

  /** Edge capture: the faces found on this device, at the camera's own resolution, and their
   * grey crops (none under the policy "off"), as one faces message. */
  function captureFaces(ws) {
    const scale = Math.min(EDGE_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight), 1);
    const w = Math.round(video.videoWidth * scale);
    const h = Math.round(video.videoHeight * scale);
    if (edge.canvas.width !== w || edge.canvas.height !== h) {
      edge.canvas.width = w;
      edge.canvas.height = h;
    }
    edge.context.drawImage(video, 0, 0, w, h);
    const pixels = edge.context.getImageData(0, 0, w, h).data;
    const capturedAt = Date.now();
    const detector = edge.detector;
    encoding = true;
    let found = null;
    let crops = null;
    detector
      .detect(pixels, w, h)
      .then(function (result) {
        found = result;
        if (edge.detector !== detector) return null; // fell back meanwhile
        crops =
          policyMode === "off"
            ? null
            : ClassPulseEdge.cropFaces(pixels, w, h, found.faces, config.crop_size, config.crop_scale);
        return ClassPulseEdge.packCrops(crops, config.crop_size);
      })
      .then(function (packed) {
        encoding = false;
        if (edge.detector !== detector) return;
        const message = ClassPulseEdge.encodeFaces(
          w,
          h,
          found.faces,
          crops,
          config.crop_size,
          found.ms,
          capturedAt,
          packed,
        );
        noteDetectorTime(found.ms);
        if (live.open() === ws && stream) sendCapture(ws, message);
      })
      .catch(function (err) {
        encoding = false;
        fallBack("error", err);
      });
  }

  function sendCapture(ws, data) {
    if (sentSeq === ackSeq) lastAckAt = Date.now(); // window was empty: start the ack clock now
    ws.send(data); // one binary message per frame
    sentSeq += 1;
    counts.sent += 1;
    renderCounts();
  }

  // --- edge capture --------------------------------------------------------------------------
  // Asked for by the server (config.capture "edge"). The page falls back to JPEG frames on its
  // own, for this page's lifetime, when the runtime or the model can't load, when detection
  // fails, or when the detector's median time over its first frames is above EDGE_SLOW_MS.
  //
  // EDGE_SLOW_MS: the detector runs on the page's main thread (one wasm thread, no worker), so
  // each call blocks the page for that long. 50 ms is the "long task" limit beyond which input
  // feels delayed; at the highest rate the server allows (5 frames/s) it still leaves the page
  // 75 % of its time. Measured in this project's test Chromium (headless, one core of a Xeon
  // server, BlazeFace short range at 640x480): median 10 ms, so a device about 5 times slower
  // still runs on-device detection; slower ones send frames.
  const EDGE_SLOW_MS = 50;
  const EDGE_TRIAL_FRAMES = 10;
  const EDGE_LOAD_TIMEOUT_MS = 30000; // a stalled download must not keep the page silent
  // 640x480 from the camera: a face at a laptop's distance is then wider than the 64 px crop
  // (downscaled, never upscaled); the detector sees 128x96 of it anyway.
  const EDGE_CAMERA = { width: 640, height: 480 };
  const EDGE_MAX_SIDE = 4096; // the faces message's limit
  const FALLBACK_TEXT = {
    unsupported: "this browser can't run on-device detection",
    model_load_failed: "on-device detection couldn't be loaded",
    too_slow: "this device is too slow for on-device detection",
    error: "on-device detection stopped with an error",
  };
  const edge = {
    state: "off", // off | loading | ready | fallback
    detector: null,
    reason: null, // why it fell back
    trial: [], // detector times of the first frames, for the speed check
    recent: [], // the latest detector times, for the page and the stats
    canvas: document.createElement("canvas"),
    context: null,
  };
  edge.context = edge.canvas.getContext("2d", { willReadFrequently: true });
  // The policy's emotion mode, from the latest config, policy message or /api/student/me.
  let policyMode = null;

  function median(values) {
    const sorted = values.slice().sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  function sendingFaces() {
    return config.capture === "edge" && edge.state === "ready";
  }

  /** Edge capture required (no frames allowed) and this page fell back: it sends nothing. */
  function edgeBlocked() {
    return !config.frames_allowed && edge.state === "fallback";
  }

  function cameraSize() {
    return config.capture === "edge" && edge.state !== "fallback"
      ? EDGE_CAMERA
      : { width: config.width, height: config.height };
  }

  /** The server's detector settings on this page's detector, so both paths find the same faces. */
  function tuneDetector(detector) {
    detector.maxFaces = config.max_faces;
    detector.minFaceSize = config.min_face_size;
    detector.iou = config.detector_iou_threshold;
    if (config.detector_score_threshold !== null) detector.setScoreThreshold(config.detector_score_threshold);
  }

  function startEdge() {
    if (edge.state !== "off") return;
    if (!window.ClassPulseEdge) {
      fallBack("unsupported", "edge.js did not load");
      return;
    }
    edge.state = "loading";
    renderCapture();
    const timeout = new Promise(function (_resolve, reject) {
      setTimeout(
        () => reject(Object.assign(new Error("timed out"), { reason: "model_load_failed" })),
        EDGE_LOAD_TIMEOUT_MS,
      );
    });
    Promise.race([ClassPulseEdge.load(config.detector_url), timeout]).then(
      function (detector) {
        if (edge.state !== "loading") return;
        tuneDetector(detector);
        edge.detector = detector;
        edge.state = "ready";
        renderCapture();
        // A camera opened before the detector was ready: ask it for the edge resolution.
        if (stream) {
          stream.getVideoTracks().forEach(function (track) {
            track
              .applyConstraints({ width: { ideal: EDGE_CAMERA.width }, height: { ideal: EDGE_CAMERA.height } })
              .catch(function () {
                /* keep the resolution it has */
              });
          });
        }
      },
      function (err) {
        fallBack((err && err.reason) || "model_load_failed", err);
      },
    );
  }

  function fallBack(reason, err) {
    if (edge.state === "fallback") return;
    edge.state = "fallback";
    edge.reason = reason;
    if (edge.detector) edge.detector.release().catch(() => undefined);
    edge.detector = null;
    if (err) console.warn("ClassPulse: on-device detection off (" + reason + "):", err);
    renderCapture();
    scheduleCapture();
  }

  function noteDetectorTime(ms) {
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
    const box = frameBox();
    const frames =
      "small pictures from the camera (at most " +
      box.width +
      "×" +
      box.height +
      ") go to the server, are analysed in memory and are never stored.";
    if (!configSeen) return "Connecting to the server: nothing is sent yet.";
    if (edgeBlocked()) {
      return (
        "Nothing is sent: your school allows only on-device face detection, and " +
        (FALLBACK_TEXT[edge.reason] || "on-device detection is off") +
        ". You still attend the class; try another browser or device to share your camera."
      );
    }
    if (config.capture !== "edge") return "Sending camera frames: " + frames;
    if (edge.state === "fallback") {
      return (
        "Sending camera frames: " + (FALLBACK_TEXT[edge.reason] || "on-device detection is off") + ", so " + frames
      );
    }
    if (edge.state !== "ready") return "Preparing on-device face detection: nothing is sent until it is ready.";
    if (policyMode === "off") {
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

  function renderCapture() {
    const mode = $("capture-mode");
    const waiting = !configSeen || (config.capture === "edge" && edge.state === "loading");
    mode.dataset.capture = sendingFaces() ? "edge" : edgeBlocked() ? "none" : waiting ? "waiting" : "frames";
    mode.dataset.fallback = edge.reason || "";
    mode.textContent = (stream || waiting ? "" : "While the camera is on: ") + captureText();
    $("capture-kind").textContent = sendingFaces()
      ? policyMode === "off"
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

  function renderCounts() {
    $("frames-sent").textContent = String(counts.sent);
    $("frames-acked").textContent = String(counts.acked);
    const why = Object.keys(counts.droppedBy).map((k) => k.replace(/_/g, " ") + " " + counts.droppedBy[k]);
    $("frames-dropped").textContent = String(counts.dropped) + (why.length ? " (" + why.join(", ") + ")" : "");
    $("frames-skipped").textContent = String(counts.skipped);
    if (join && join.student_id) {
      try {
        sessionStorage.setItem(COUNTS_KEY, JSON.stringify(Object.assign({ student_id: join.student_id }, counts)));
      } catch (_err) {
        /* storage full or off: the counts start again with the next page */
      }
    }
  }

  // --- socket --------------------------------------------------------------------------------
  function setConn(state, text) {
    connState.dataset.state = state;
    connState.textContent = text;
  }

  function sendJson(message) {
    const ws = live.open();
    if (ws) ws.send(JSON.stringify(message));
  }

  function applyConfig(msg) {
    const next = Object.assign({}, config);
    [
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
    ].forEach(function (key) {
      const value = Number(msg[key]);
      if (msg[key] !== undefined && msg[key] !== null && Number.isFinite(value) && value >= 0) next[key] = value;
    });
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
    if (typeof msg.emotion_mode === "string") policyMode = msg.emotion_mode; // the newest word on it
    config = next;
    configured = true;
    configSeen = true;
    if (config.capture === "edge") startEdge();
    if (edge.detector) tuneDetector(edge.detector);
    renderCapture();
    scheduleCapture();
  }

  // Backpressure: the server asks for a lower rate while its workers are behind (or this page
  // exceeds the cap), and for the normal rate again once they caught up.
  function applyRate(msg) {
    const fps = Number(msg.fps);
    if (!Number.isFinite(fps) || fps < 0) return;
    config = Object.assign({}, config, { fps: fps });
    connState.title =
      msg.reason && msg.reason !== "normal" ? "server asked for " + fps + " frames/s (" + msg.reason + ")" : "";
    scheduleCapture();
  }

  setInterval(function () {
    const ws = live.open();
    if (!ws || capturedSinceReport === 0) return;
    // What this page sends (and, in edge capture, how long its detector takes; after a
    // fallback, why it sends frames instead).
    const stats = { type: "stats", captured: capturedSinceReport, capture: sendingFaces() ? "edge" : "frames" };
    if (sendingFaces() && edge.recent.length) stats.detector_ms = Math.round(median(edge.recent) * 100) / 100;
    if (edge.reason) stats.fallback = edge.reason;
    ws.send(JSON.stringify(stats));
    capturedSinceReport = 0;
  }, STATS_EVERY_MS);

  function renderSelf() {
    const v = CP.studentView(selfState.presence, selfState.emotion, false);
    const emotion = $("self-emotion");
    emotion.dataset.emotion = v.emotion || "none";
    emotion.textContent = v.emotion || "—";
    $("self-confidence").textContent = v.emotion && v.confidence !== null ? Math.round(v.confidence * 100) + " %" : "—";
    const face = $("self-presence");
    face.dataset.presence = v.presence;
    if (v.presence === "present" && v.faces !== null) {
      face.textContent = v.faces > 0 ? "face seen" : "no face";
    } else if (v.presence === "present" && stream) {
      face.textContent = "waiting for the first result";
    } else {
      face.textContent = PRESENCE_TEXT[v.presence] || v.presence;
    }
  }

  function onSelf(msg) {
    // The gateway forwards this student's LiveUpdates with their own type moved to "kind".
    if (msg.kind === "presence") {
      if (!selfState.presence || msg.t >= selfState.presence.t) selfState.presence = msg;
    } else if (!selfState.emotion || msg.t >= selfState.emotion.t) {
      selfState.emotion = msg;
    }
    renderSelf();
    if (msg.presence === "withdrawn" && !finished) stopAll(true); // e.g. from another tab
  }

  function onAck(msg) {
    ackSeq = Math.max(ackSeq, Number(msg.seq) || 0);
    lastAckAt = Date.now();
    if (msg.ok) {
      counts.acked += 1;
    } else {
      counts.dropped += 1;
      const reason = String(msg.reason || "other");
      counts.droppedBy[reason] = (counts.droppedBy[reason] || 0) + 1;
      $("frames-dropped").title = msg.reason ? "last reason: " + msg.reason : "";
      if (msg.reason === "crops_not_allowed" || msg.reason === "presence_only") {
        applyPolicy({ emotion_mode: "off" }); // changed meanwhile
      } else if (msg.reason === "edge_required" && config.frames_allowed) {
        config = Object.assign({}, config, { frames_allowed: false }); // the server says so
        renderCapture();
      }
    }
    renderCounts();
  }

  const live = CP.reconnectingSocket({
    url: () => CP.wsUrl("/ws/student"),
    protocols: () => CP.tokenProtocols(join.token),
    ping: JSON.stringify({ type: "ping" }),
    onState: setConn,
    onOpen: function (ws) {
      configured = false;
      sentSeq = 0;
      ackSeq = 0;
      encoding = false;
      CP.setError(streamError, "");
      sendJson({ type: "camera", state: stream ? "on" : "off" });
      // The server sends its config first; if it doesn't, go on with the defaults.
      setTimeout(function () {
        if (live.open() !== ws || configured) return;
        configured = true;
        configSeen = true;
        renderCapture();
      }, 2000);
    },
    onMessage: function (event) {
      if (typeof event.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (_err) {
        return;
      }
      if (msg.type === "ack") onAck(msg);
      else if (msg.type === "rate") applyRate(msg);
      else if (msg.type === "config") {
        live.recovered(); // the server accepted this connection
        applyConfig(msg);
      } else if (msg.type === "self") onSelf(msg);
      else if (msg.type === "policy") {
        applyPolicy(msg);
        loadSoFar(); // what is kept about the student may change with the policy
      } else if (msg.type === "session_ended") sessionOver = true;
      else if (msg.type === "error") CP.setError(streamError, msg.message || "Server error.");
    },
    onClose: function (event) {
      encoding = false;
      if (finished) return false;
      if (event.reason === "withdrawn") {
        stopAll(true);
        return false;
      }
      if (sessionOver || event.reason === "session ended") {
        expire("This session has ended. Thank you for taking part.", "session ended");
        return false;
      }
      if (event.code === 4409) {
        // A newer socket of this student took over (another tab or window: app/students.py).
        // Stop without reconnecting, or two tabs would take the class from each other; the join
        // is kept, so reloading this tab continues the class here.
        finished = true;
        stopCamera(false);
        live.stop();
        setConn("closed", "open in another tab");
        CP.setError(
          streamError,
          "This class is open in another tab or window, so this page stopped. Reload this page to continue here instead.",
        );
        setButtons();
        return false;
      }
      if (event.code === 4401 || event.code === 4403 || event.code === 4404) {
        expire("This join link has expired or is no longer valid. Rejoin to continue.", "link expired — rejoin");
        return false;
      }
      return true;
    },
  });

  function connect() {
    if (!finished && join) live.start();
  }

  function expire(message, state) {
    finished = true;
    stopCamera(false);
    live.stop();
    sessionStorage.removeItem(STORE_KEY);
    setConn("expired", state);
    $("expired-text").textContent = message;
    CP.show($("expired-step"), true);
    setButtons();
  }

  // --- withdraw ------------------------------------------------------------------------------
  /** Camera off, socket closed for good, stored token gone: nothing more is sent. */
  function stopAll(recorded) {
    finished = true;
    stopCamera(false);
    live.stop(1000, "withdrawn");
    sessionStorage.removeItem(STORE_KEY);
    setConn("closed", "analysis stopped");
    selfState.presence = { presence: "withdrawn", t: Date.now() / 1000 };
    renderSelf();
    setButtons();
    if (!recorded) {
      $("withdrawn-text").textContent =
        "Your camera is off and nothing more is sent. The server couldn't be reached to record the withdrawal: please tell your teacher.";
    }
    CP.show($("withdrawn-step"), true);
  }

  async function withdraw() {
    $("withdraw").disabled = true;
    let recorded = false;
    try {
      const result = await CP.api("/api/student/withdraw", { method: "POST", token: join.token, body: {} });
      recorded = result.ok;
    } catch (_err) {
      recorded = false;
    }
    const ws = live.open();
    if (!recorded && ws) {
      ws.send(JSON.stringify({ type: "withdraw" }));
      recorded = true;
    }
    stopAll(recorded);
  }

  $("start").addEventListener("click", () => startCamera());
  $("stop").addEventListener("click", () => stopCamera());
  $("withdraw").addEventListener("click", withdraw);
  $("rejoin").addEventListener("click", function () {
    sessionStorage.removeItem(STORE_KEY);
    location.reload();
  });

  // --- privacy (issue 5): the policy in force, consent state, and the data kept so far ---------
  const MODE_TEXT = {
    per_student: "Your teacher sees your estimated expression. It is kept per student for the retention period.",
    aggregate_only:
      "Your school keeps class totals only: your teacher sees no estimate about you, and none is stored about you.",
    off: "Emotion estimates are switched off at your school: only whether you are connected and a face is seen.",
  };
  const SO_FAR_EVERY_MS = 15000;
  let soFarTimer = null;
  let soFarLoading = false; // one /api/student/me request in flight at a time

  function analysing() {
    return !join || join.analysis !== false;
  }

  /** Show the policy in force. It only renders: renderSoFar calls it with every
   * /api/student/me answer, so fetching from here would loop request after request. */
  function applyPolicy(p) {
    if (!p || !p.emotion_mode) return;
    $("policy-mode").textContent = MODE_TEXT[p.emotion_mode] || p.emotion_mode;
    $("student").dataset.emotionMode = p.emotion_mode;
    policyMode = p.emotion_mode; // under "off" the faces messages carry no crops
    renderCapture();
  }

  function renderSoFar(me) {
    applyPolicy(me.policy);
    const consent =
      me.consent === "accepted"
        ? "given (notice version " + me.consent_version + ")"
        : me.consent === "declined"
          ? "declined: you attend without analysis"
          : "withdrawn: analysis stopped";
    $("self-consent").textContent = consent;
    $("sofar-frames").textContent = String(me.frames);
    $("sofar-faced").textContent = String(me.frames_with_face);
    let estimate = "not kept about you (school policy)";
    if (me.probs) {
      const top = Object.keys(me.probs).sort((a, b) => me.probs[b] - me.probs[a])[0];
      estimate = top + " " + Math.round(me.probs[top] * 100) + " % on average";
    } else if (me.policy && me.policy.emotion_mode === "per_student") {
      estimate = "no estimate yet";
    }
    $("sofar-estimate").textContent = estimate;
  }

  /** Called by the refresh timer, on start and by a live policy message only. */
  async function loadSoFar() {
    if (!join || soFarLoading) return;
    soFarLoading = true;
    try {
      const result = await CP.api("/api/student/me", { token: join.token });
      if (result.ok && result.data) renderSoFar(result.data);
    } catch (_err) {
      /* offline: the next refresh tries again */
    } finally {
      soFarLoading = false;
    }
  }

  function startPrivacyView() {
    $("withdraw").hidden = !analysing(); // nothing to withdraw from
    setButtons();
    loadSoFar();
    clearInterval(soFarTimer);
    soFarTimer = setInterval(loadSoFar, SO_FAR_EVERY_MS);
  }

  // --- start ---------------------------------------------------------------------------------
  renderCapture();
  renderCounts();
  join = loadStored();
  if (join)
    enterStream(); // a reload: the camera waits for the Start button again
  else loadInvitation();
})();
