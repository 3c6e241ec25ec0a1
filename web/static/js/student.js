/* Student page: consent first, then a display name, then (only then) the camera. Frames go
 * to the server as single binary JPEG messages with at most max_in_flight unacknowledged;
 * when the window is full the page skips the capture instead of queueing frames. */
(function () {
  "use strict";
  const CP = window.ClassPulse;
  const root = document.getElementById("student");
  const code = root.dataset.joinCode;
  const STORE_KEY = "classpulse.join." + code;
  const ACK_TIMEOUT_MS = 10000; // a full window with no ack this long means a stuck socket
  const PRESENCE_TEXT = {
    present: "face seen",
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
  let config = { fps: 2, max_fps: 5, max_in_flight: 2, width: 320, height: 240, jpeg_quality: 0.7 };
  let stream = null;
  let starting = null;
  let captureTimer = null;
  let encoding = false;
  let finished = false; // withdrawn or expired: no camera, no reconnect

  // Per connection: frames are numbered from 1 and acknowledged in order.
  let socket = null;
  let configured = false;
  let sentSeq = 0;
  let ackSeq = 0;
  let lastAckAt = 0;
  const retry = CP.backoff(1000, 30000);
  let retryTimer = null;
  let countdownTimer = null;

  const counts = { sent: 0, acked: 0, dropped: 0, skipped: 0 };

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
    } catch (err) {
      /* unreadable: start over */
    }
    sessionStorage.removeItem(STORE_KEY);
    return null;
  }

  function joinFailure(status, fallback) {
    if (status === 404) return "This join link is unknown. Check the link with your teacher.";
    if (status === 410) return "This session has ended.";
    if (status === 429) return "Too many attempts. Wait a minute, then try again.";
    return fallback;
  }

  async function loadInvitation() {
    let result;
    try {
      result = await CP.api("/api/join/" + encodeURIComponent(code));
    } catch (err) {
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
    $("consent-version").textContent = String(info.consent_version);
    const text = $("consent-text");
    text.replaceChildren.apply(text, String(info.consent_text || "").split(/\n\s*\n/).map(function (para) {
      const p = document.createElement("p");
      p.textContent = para.trim();
      return p;
    }));
    step("consent-step");
  }

  $("consent-accept").addEventListener("click", function () {
    step("name-step");
    $("display-name").focus();
  });

  $("consent-decline").addEventListener("click", function () {
    step("declined-step");
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
        body: { display_name: name, consent: true, consent_version: consentVersion },
      });
      if (result.status === 409) {
        // The consent notice changed since it was shown: show the new one before joining.
        await loadInvitation();
        CP.setError(error, "The consent notice has changed. Please read it again.");
        return;
      }
      if (!result.ok || !result.data || !result.data.token) {
        CP.setError(error, joinFailure(result.status, CP.errorText(result, "Couldn't join (HTTP " + result.status + ").")));
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
      };
      sessionStorage.setItem(STORE_KEY, JSON.stringify(join));
      enterStream();
      startCamera(); // consent and name given just now: that click is the request to start
    } catch (err) {
      CP.setError(error, "Can't reach the server. Check your connection and try again.");
    } finally {
      button.disabled = false;
    }
  });

  function enterStream() {
    CP.setError($("join-error"), "");
    if (join.session_title) $("class-title").textContent = join.session_title;
    $("self-name").textContent = join.display_name || "";
    step("stream-step");
    connect();
  }

  // --- camera --------------------------------------------------------------------------------
  function setButtons() {
    $("start").disabled = Boolean(stream) || finished;
    $("stop").disabled = !stream;
    $("withdraw").disabled = finished;
    $("camera-state").textContent = stream
      ? "Camera on: frames go to the server for analysis and are not stored."
      : "Camera off: nothing is sent.";
  }

  function startCamera() {
    if (stream || finished) return Promise.resolve();
    if (!starting) starting = openCamera().finally(() => (starting = null));
    return starting;
  }

  async function openCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      CP.setError(streamError, "This browser can't share the camera on this page (it needs HTTPS).");
      return;
    }
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { width: { ideal: config.width }, height: { ideal: config.height }, facingMode: "user" },
      });
    } catch (err) {
      const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
      CP.setError(streamError, denied
        ? "Camera permission was denied. You can follow the class without it, or allow the camera in the browser's site settings and press Start."
        : "Couldn't start the camera: " + ((err && err.message) || err));
      return;
    }
    if (finished) {
      media.getTracks().forEach((t) => t.stop());
      return;
    }
    stream = media;
    CP.setError(streamError, "");
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
      stream.getTracks().forEach((t) => t.stop());
      stream = null;
      video.srcObject = null;
      if (notify !== false) sendJson({ type: "camera", state: "off" });
    }
    setButtons();
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
    const ws = socket;
    if (!stream || !ws || ws.readyState !== WebSocket.OPEN || !configured || !(currentFps() > 0)) return;
    const inFlight = sentSeq - ackSeq;
    if (encoding || inFlight >= config.max_in_flight) {
      counts.skipped += 1;
      renderCounts();
      if (inFlight > 0 && Date.now() - lastAckAt > ACK_TIMEOUT_MS) ws.close(4000, "ack timeout");
      return;
    }
    if (video.readyState < 2 || !video.videoWidth) return;
    // Fit the camera picture into width x height without distorting faces.
    const scale = Math.min(config.width / video.videoWidth, config.height / video.videoHeight, 1);
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    encoding = true;
    canvas.toBlob(function (blob) {
      encoding = false;
      if (!blob || socket !== ws || ws.readyState !== WebSocket.OPEN || !stream) return;
      if (sentSeq === ackSeq) lastAckAt = Date.now(); // window was empty: start the ack clock now
      ws.send(blob); // one binary message per frame
      sentSeq += 1;
      counts.sent += 1;
      renderCounts();
    }, "image/jpeg", config.jpeg_quality);
  }

  function renderCounts() {
    $("frames-sent").textContent = String(counts.sent);
    $("frames-acked").textContent = String(counts.acked);
    $("frames-dropped").textContent = String(counts.dropped);
    $("frames-skipped").textContent = String(counts.skipped);
  }

  // --- socket --------------------------------------------------------------------------------
  function setConn(state, text) {
    connState.dataset.state = state;
    connState.textContent = text;
  }

  function sendJson(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function applyConfig(msg) {
    const next = Object.assign({}, config);
    ["fps", "max_fps", "max_in_flight", "width", "height", "jpeg_quality"].forEach(function (key) {
      const value = Number(msg[key]);
      if (msg[key] !== undefined && isFinite(value) && value >= 0) next[key] = value;
    });
    next.max_in_flight = Math.max(1, Math.floor(next.max_in_flight));
    next.width = Math.max(16, Math.floor(next.width)) || 320;
    next.height = Math.max(16, Math.floor(next.height)) || 240;
    next.jpeg_quality = Math.min(1, Math.max(0.1, next.jpeg_quality));
    config = next;
    configured = true;
    scheduleCapture();
  }

  function renderSelf(msg) {
    const presence = msg.presence || "present";
    const label = presence === "present" ? msg.emotion || null : null;
    const emotion = $("self-emotion");
    emotion.dataset.emotion = label || "none";
    emotion.textContent = label || "—";
    $("self-confidence").textContent =
      label && typeof msg.confidence === "number" ? Math.round(msg.confidence * 100) + " %" : "—";
    const face = $("self-presence");
    face.dataset.presence = presence;
    face.textContent = PRESENCE_TEXT[presence] || presence;
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = null;
    if (finished || !join) return;
    setConn("connecting", "connecting…");
    const ws = new WebSocket(CP.wsUrl("/ws/student?token=" + encodeURIComponent(join.token)));
    ws.binaryType = "arraybuffer";
    socket = ws;
    configured = false;
    sentSeq = 0;
    ackSeq = 0;
    ws.onopen = function () {
      setConn("open", "connected");
      CP.setError(streamError, "");
      sendJson({ type: "camera", state: stream ? "on" : "off" });
      // The server sends its config first; if it doesn't, go on with the defaults.
      setTimeout(function () {
        if (socket === ws && !configured) configured = true;
      }, 2000);
    };
    ws.onmessage = function (event) {
      if (typeof event.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (msg.type === "ack") {
        ackSeq = Math.max(ackSeq, Number(msg.seq) || 0);
        lastAckAt = Date.now();
        if (msg.ok) counts.acked += 1;
        else {
          counts.dropped += 1;
          $("frames-dropped").title = msg.reason ? "last reason: " + msg.reason : "";
        }
        renderCounts();
      } else if (msg.type === "config") {
        retry.reset(); // the server accepted this connection
        applyConfig(msg);
      } else if (msg.type === "self") {
        renderSelf(msg);
      } else if (msg.type === "error") {
        CP.setError(streamError, msg.message || "Server error.");
      }
    };
    ws.onclose = function (event) {
      if (socket !== ws) return;
      socket = null;
      encoding = false;
      if (finished) return;
      if (event.code === 4401 || event.code === 4403 || event.code === 4404 || event.code === 4410) {
        expire(event.code === 4410 ? "This session has ended." : "Link expired — rejoin to continue.");
        return;
      }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = retry.next();
    const due = Date.now() + delay;
    const tick = function () {
      const s = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setConn("reconnecting", "disconnected — retrying in " + s + " s");
    };
    tick();
    countdownTimer = setInterval(tick, 1000);
    retryTimer = setTimeout(connect, delay);
  }

  window.addEventListener("online", function () {
    if (!socket && retryTimer && !finished) {
      retry.reset();
      connect();
    }
  });

  function expire(message) {
    finished = true;
    stopCamera(false);
    sessionStorage.removeItem(STORE_KEY);
    setConn("expired", "link expired — rejoin");
    $("expired-text").textContent = message;
    step("expired-step");
  }

  // --- withdraw ------------------------------------------------------------------------------
  async function withdraw() {
    $("withdraw").disabled = true;
    let recorded = false;
    try {
      const result = await CP.api("/api/student/withdraw", { method: "POST", token: join.token, body: {} });
      recorded = result.ok;
    } catch (err) {
      recorded = false;
    }
    if (!recorded && socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "withdraw" }));
      recorded = true;
    }
    finished = true;
    stopCamera(false);
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    if (socket) socket.close(1000, "withdrawn");
    socket = null;
    sessionStorage.removeItem(STORE_KEY);
    setConn("closed", "analysis stopped");
    renderSelf({ presence: "withdrawn" });
    setButtons();
    if (!recorded) {
      $("withdrawn-text").textContent =
        "Your camera is off and nothing more is sent. The server couldn't be reached to record the withdrawal: please tell your teacher.";
    }
    CP.show($("withdrawn-step"), true);
  }

  $("start").addEventListener("click", () => startCamera());
  $("stop").addEventListener("click", () => stopCamera());
  $("withdraw").addEventListener("click", withdraw);
  $("rejoin").addEventListener("click", function () {
    sessionStorage.removeItem(STORE_KEY);
    location.reload();
  });

  // --- start ---------------------------------------------------------------------------------
  setButtons();
  renderCounts();
  join = loadStored();
  if (join) enterStream(); // a reload: the camera waits for the Start button again
  else loadInvitation();
})();
