/* Live teacher dashboard: one tile per student from the live WebSocket, the class's current
 * distribution, a five-minute timeline sampled from the tiles, and the stored history. */
(function () {
  "use strict";
  const CP = window.ClassPulse;
  const root = document.getElementById("dashboard");
  const sessionId = root.dataset.sessionId;
  const sessionPath = "/api/sessions/" + encodeURIComponent(sessionId);

  // Until the snapshot brings the model's own label order.
  let labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
  const PRESENCE_TEXT = {
    present: "present",
    no_face: "no face",
    camera_off: "camera off",
    disconnected: "disconnected",
    // The socket dropped without a goodbye (Wi-Fi, a sleeping device): the page is retrying.
    reconnecting: "reconnecting…",
    withdrawn: "withdrawn",
    waiting: "not started",
  };
  const SAMPLE_MS = 2000;
  const TIMELINE_POINTS = 150; // 5 minutes at one sample every 2 s

  const tiles = document.getElementById("tiles");
  const tileTemplate = document.getElementById("tile-template");
  const connState = document.getElementById("conn-state");
  const errorBox = document.getElementById("dashboard-error");
  const students = new Map(); // student_id -> {id, name, withdrawn, presence, emotion, el, order}
  let joinedOrder = 0;

  function colorOf(label) {
    return CP.emotionColor(label, labels);
  }

  function pct(p) {
    return Math.round(p * 100) + " %";
  }

  // What a tile's percentage means, worded from the model's calibration as the workers publish
  // it (snapshot.calibration): how often the model was right at that confidence on the set it
  // was calibrated on, or that it is not calibrated. Never a fixed claim.
  let calibration = null;
  function estimateText(confidence) {
    const c = calibration;
    if (!c || !c.calibrated) return "estimate (not calibrated)";
    const bin = (c.reliability || []).find((b) => confidence >= b.lo && (confidence < b.hi || b.hi >= 1));
    if (!bin || !bin.count) return "estimate, calibrated on " + c.dataset + " (no image there had this confidence)";
    return "estimate, calibrated: right about " + pct(bin.accuracy) + " of the time at this confidence on " +
      c.dataset + " (" + bin.count + " of " + c.size + " images)";
  }
  function showCalibration() {
    let note = document.getElementById("calibration-note");
    if (!note) {
      note = document.createElement("p");
      note.id = "calibration-note";
      note.className = "muted";
      tiles.parentNode.insertBefore(note, tiles);
    }
    const c = calibration;
    note.textContent = c && c.calibrated
      ? "Percentages: estimate, calibrated on " + c.dataset + " (" + c.size + " images); a percentage's tooltip says how often the model was right at that confidence there."
      : "Percentages: estimate (not calibrated). The model's own score, not how often it is right.";
    note.hidden = policy.mode === "off"; // no emotion estimates at all
  }

  // --- student state -------------------------------------------------------------------------

  function viewOf(s) {
    return CP.studentView(s.presence, s.emotion, s.withdrawn);
  }

  function ensureStudent(id, name) {
    let s = students.get(id);
    if (!s) {
      const el = tileTemplate.content.firstElementChild.cloneNode(true);
      el.dataset.studentId = id;
      s = { id: id, name: name || "Student", withdrawn: false, presence: null, emotion: null, el: el, order: joinedOrder++ };
      students.set(id, s);
      tiles.appendChild(el);
      updateCount();
      foldClassInfo();
    } else if (name && name !== s.name) {
      s.name = name;
    }
    return s;
  }

  function updateCount() {
    document.getElementById("student-count").textContent = String(students.size);
    CP.show(document.getElementById("no-students"), students.size === 0);
  }

  function renderProbs(bar, probs) {
    if (!probs) {
      bar.replaceChildren();
      return;
    }
    const segments = labels.map(function (label) {
      const seg = document.createElement("span");
      const p = Number(probs[label]) || 0;
      seg.className = "seg";
      seg.style.width = (p * 100).toFixed(1) + "%";
      seg.style.backgroundColor = colorOf(label);
      seg.title = label + " " + pct(p);
      return seg;
    });
    bar.replaceChildren.apply(bar, segments);
  }

  // Uncertainty shown honestly (issue 5): a reason instead of a bare label when the face is too
  // small, too few frames arrived since the stream (re)started, or none arrived recently.
  const NO_DATA_S = 10;
  const QUALITY_TEXT = { face_too_small: "face too small", few_frames: "no data" };
  function honestView(s) {
    const v = viewOf(s);
    if (v.presence !== "present" || !s.emotion || !v.emotion) return v;
    const reason = Date.now() - (s.emotionAt || 0) > NO_DATA_S * 1000 ? "no data" : QUALITY_TEXT[s.emotion.quality];
    if (reason) {
      v.emotion = reason;
      v.confidence = null;
      v.probs = null;
      v.stale = reason === "no data";
    }
    return v;
  }

  function renderTile(s) {
    const v = honestView(s);
    s.shownStale = Boolean(v.stale);
    const el = s.el;
    el.dataset.presence = v.presence;
    el.querySelector(".name").textContent = s.name;
    const presence = el.querySelector(".presence");
    presence.dataset.presence = v.presence;
    presence.textContent = PRESENCE_TEXT[v.presence] || v.presence;
    const emotion = el.querySelector(".emotion");
    emotion.dataset.emotion = v.emotion || "none";
    emotion.textContent = v.emotion || "—";
    // The colour is a swatch beside the word (CSS), never the text's colour: some emotion
    // colours are too light for text, and the word says it anyway.
    const swatch = Boolean(v.emotion && labels.includes(v.emotion));
    emotion.dataset.swatch = swatch ? "yes" : "no";
    emotion.style.setProperty("--emo", swatch ? colorOf(v.emotion) : "transparent");
    const conf = el.querySelector(".confidence");
    conf.textContent = v.emotion && typeof v.confidence === "number" ? pct(v.confidence) : "";
    conf.title = conf.textContent ? estimateText(v.confidence) : "";
    renderProbs(el.querySelector(".probbar"), v.probs);
    const face = el.querySelector(".face");
    face.textContent = v.faces === null ? "" : v.faces > 0 ? "face seen" : "no face";
    const ago = el.querySelector(".ago");
    ago.dataset.t = String(v.t || "");
    ago.textContent = v.t ? CP.ago(v.t) : "";
    s.look = lookReason(v);
    el.dataset.attention = s.look ? "yes" : "no";
    el.querySelector(".look").textContent = s.look ? "needs a look: " + s.look : "";
    scheduleSort();
  }

  // --- needs a look, and the order of the tiles ----------------------------------------------
  // In words on the tile (not only its colour): no face in view, a negative or uncertain
  // estimate, or no update for a while (stalled). A prompt to look, not a judgement.
  const NEGATIVE = ["angry", "disgust", "fear", "sad"];
  function lookReason(v) {
    if (v.presence === "no_face") return "no face";
    if (v.presence === "disconnected" || v.presence === "reconnecting" || v.stale) return "stalled";
    if (v.presence !== "present" || !v.emotion) return "";
    if (NEGATIVE.includes(v.emotion)) return "negative";
    if (!labels.includes(v.emotion)) return "uncertain"; // uncertain, face too small
    return "";
  }

  const SORT_KEY = "classpulse.dashboard.sort";
  const sortSelect = document.getElementById("tile-sort");
  let sortTimer = null;
  let lastSort = 0;

  function rank(s) {
    if (s.look) return 0;
    const p = s.el.dataset.presence;
    return p === "present" ? 1 : 2; // then camera off, not started, no analysis, withdrawn
  }

  function scheduleSort() {
    // At most once a second: a full class sends many updates, and tiles should not jitter.
    if (!sortTimer) sortTimer = setTimeout(sortTiles, Math.max(0, lastSort + 1000 - Date.now()));
  }

  function sortTiles() {
    clearTimeout(sortTimer);
    sortTimer = null;
    lastSort = Date.now();
    const by = sortSelect.value;
    const list = Array.from(students.values()).sort(function (a, b) {
      if (by === "attention" && rank(a) !== rank(b)) return rank(a) - rank(b);
      if (by === "joined") return a.order - b.order;
      return a.name.localeCompare(b.name) || a.order - b.order;
    });
    const focused = document.activeElement;
    list.forEach(function (s, i) {
      if (tiles.children[i] !== s.el) tiles.insertBefore(s.el, tiles.children[i] || null);
    });
    // Moving a tile blurs it: a keyboard user keeps their place.
    if (focused && focused !== document.activeElement && tiles.contains(focused)) focused.focus({ preventScroll: true });
    const looks = list.filter((s) => s.look);
    const why = {};
    looks.forEach((s) => (why[s.look] = (why[s.look] || 0) + 1));
    const summary = looks.length
      ? looks.length + (looks.length === 1 ? " needs" : " need") + " a look: " + Object.keys(why).map((k) => why[k] + " " + k).join(", ")
      : students.size ? "No student needs a look now." : "";
    const status = document.getElementById("needs-look-summary");
    if (status.textContent !== summary) status.textContent = summary; // a status: say changes only
  }

  try {
    const saved = localStorage.getItem(SORT_KEY);
    if (Array.from(sortSelect.options).some((o) => o.value === saved)) sortSelect.value = saved;
  } catch (err) {
    /* storage off: the default order */
  }
  sortSelect.addEventListener("change", function () {
    try {
      localStorage.setItem(SORT_KEY, sortSelect.value);
    } catch (err) {
      /* not remembered */
    }
    sortTiles();
  });

  // --- join link and notices: folded away once the class has started -------------------------
  const INFO_KEY = "classpulse.dashboard.classInfo"; // "open" | "closed": the teacher's choice
  const classInfo = document.getElementById("class-info");
  function infoChoice() {
    try {
      return localStorage.getItem(INFO_KEY);
    } catch (err) {
      return null;
    }
  }
  function foldClassInfo() {
    if (students.size === 0) {
      classInfo.open = true; // nobody has joined yet: the join link is what the teacher needs
      return;
    }
    classInfo.open = infoChoice() === "open";
  }
  classInfo.querySelector("summary").addEventListener("click", function () {
    try {
      localStorage.setItem(INFO_KEY, classInfo.open ? "closed" : "open"); // the state it goes to
    } catch (err) {
      /* not remembered */
    }
  });
  foldClassInfo();

  // --- frame counters on the tiles: shown on request ------------------------------------------
  const DETAILS_KEY = "classpulse.dashboard.counters";
  const detailsButton = document.getElementById("tile-details");
  function showDetails(on) {
    root.dataset.details = on ? "on" : "off";
    detailsButton.setAttribute("aria-pressed", on ? "true" : "false");
  }
  detailsButton.addEventListener("click", function () {
    const on = root.dataset.details !== "on";
    showDetails(on);
    try {
      localStorage.setItem(DETAILS_KEY, on ? "on" : "off");
    } catch (err) {
      /* not remembered */
    }
  });
  try {
    showDetails(localStorage.getItem(DETAILS_KEY) === "on");
  } catch (err) {
    showDetails(false);
  }

  function applySnapshot(msg) {
    if (Array.isArray(msg.labels) && msg.labels.length) labels = msg.labels.slice();
    calibration = msg.calibration || null;
    showCalibration();
    students.clear();
    joinedOrder = 0;
    tiles.replaceChildren();
    (msg.students || []).forEach(function (st) {
      const s = ensureStudent(st.student_id, st.display_name);
      s.withdrawn = Boolean(st.withdrawn);
      s.presence = st.presence || null;
      s.emotion = st.emotion || null;
      s.emotionAt = Date.now();
      renderTile(s);
    });
    updateCount();
    setupCharts();
    scheduleDistribution();
  }

  function applyUpdate(msg) {
    if (!msg.student_id) return;
    const s = ensureStudent(msg.student_id, msg.display_name);
    if (msg.type === "presence") {
      if (!s.presence || msg.t >= s.presence.t) s.presence = msg;
      if (msg.presence === "withdrawn") {
        s.withdrawn = true;
        s.emotion = null; // nothing of a withdrawn student's estimate is kept, even in memory
      }
    } else if (!s.withdrawn && (!s.emotion || msg.t >= s.emotion.t)) {
      s.emotion = msg;
      s.emotionAt = Date.now(); // this browser's clock: staleness must not depend on the server's
    }
    renderTile(s);
    scheduleDistribution();
  }

  /** Current class counts per label, plus how many are uncertain or show no face. */
  function classCounts() {
    const fromPolicy = policyCounts(); // outside per_student mode: the aggregator's class mix
    if (fromPolicy) return fromPolicy;
    const counts = {};
    labels.forEach(function (label) {
      counts[label] = 0;
    });
    let uncertain = 0;
    let noFace = 0;
    students.forEach(function (s) {
      const v = honestView(s);
      if (v.presence === "no_face") noFace += 1;
      if (v.emotion && v.emotion in counts) counts[v.emotion] += 1;
      else if (v.emotion) uncertain += 1; // uncertain, face too small, no data
    });
    return { counts: counts, uncertain: uncertain, noFace: noFace };
  }

  // --- charts --------------------------------------------------------------------------------
  let distributionChart = null;
  let timelineChart = null;
  let historyChart = null;
  let distributionPending = false;

  function chartsAvailable() {
    return typeof window.Chart === "function";
  }

  function setupCharts() {
    if (!chartsAvailable()) return;
    const colors = labels.map(colorOf);
    if (distributionChart) distributionChart.destroy();
    distributionChart = new Chart(document.getElementById("distribution-chart"), {
      type: "bar",
      data: { labels: labels, datasets: [{ label: "students", data: labels.map(() => 0), backgroundColor: colors }] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
    if (timelineChart) timelineChart.destroy();
    timelineChart = new Chart(document.getElementById("timeline-chart"), {
      type: "line",
      data: {
        labels: [],
        datasets: labels.map(function (label, i) {
          return {
            label: label,
            data: [],
            borderColor: colorOf(label),
            backgroundColor: colorOf(label) + "99",
            fill: i === 0 ? "origin" : "-1",
            pointRadius: 0,
            borderWidth: 1,
            tension: 0.2,
          };
        }),
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { ticks: { maxTicksLimit: 6, autoSkip: true } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      },
    });
  }

  function scheduleDistribution() {
    if (distributionPending) return;
    distributionPending = true;
    // Many updates per second arrive in a full class: redraw at most once per frame.
    requestAnimationFrame(function () {
      distributionPending = false;
      const c = classCounts();
      document.getElementById("uncertain-count").textContent = String(c.uncertain);
      document.getElementById("noface-count").textContent = String(c.noFace);
      if (distributionChart) {
        distributionChart.data.datasets[0].data = labels.map((label) => c.counts[label]);
        distributionChart.update("none");
      }
    });
  }

  function sampleTimeline() {
    if (!timelineChart) return;
    const c = classCounts();
    const data = timelineChart.data;
    data.labels.push(new Date().toLocaleTimeString());
    data.datasets.forEach(function (ds) {
      ds.data.push(c.counts[ds.label] || 0);
    });
    if (data.labels.length > TIMELINE_POINTS) {
      data.labels.shift();
      data.datasets.forEach((ds) => ds.data.shift());
    }
    timelineChart.update("none");
  }

  // --- live socket ---------------------------------------------------------------------------
  function setConn(state, text) {
    connState.dataset.state = state;
    connState.textContent = state === "open" ? "live" : text;
  }

  function sessionEnded() {
    document.querySelector(".join-panel").hidden = true;
    const meta = document.getElementById("session-meta");
    if (!/ended/.test(meta.textContent)) meta.textContent += " · ended";
  }

  const live = CP.reconnectingSocket({
    url: () => CP.wsUrl("/ws/sessions/" + encodeURIComponent(sessionId) + "/live"),
    ping: "ping",
    onState: setConn,
    onMessage: function (event) {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        return; // "pong"
      }
      if (msg.type === "snapshot") {
        live.recovered(); // only a connection that delivered data counts as recovered
        CP.setError(errorBox, "");
        applySnapshot(msg);
        applyPolicy(msg.policy, msg.class);
        loadAlerts();
      } else if (msg.type === "student" || msg.type === "presence") {
        applyUpdate(msg);
      } else if (msg.type === "alert") {
        applyAlert(msg);
      } else if (msg.type === "policy") {
        applyPolicy(msg);
      } else if (msg.type === "class") {
        applyClassUpdate(msg);
      } else if (msg.type === "session_ended") {
        sessionEnded();
      } else if (msg.type === "error") {
        CP.setError(errorBox, msg.message || "Server error.");
      }
    },
    onClose: function (event) {
      if (event.code === 4401) {
        CP.toLogin();
        return false;
      }
      if (event.code === 4403 || event.code === 4404) {
        setConn("closed", "no access");
        CP.setError(errorBox, event.code === 4403
          ? "You don't have access to this session's live data."
          : "This session doesn't exist.");
        return false;
      }
      return true;
    },
  });

  // --- session details, join link and QR -----------------------------------------------------
  async function loadSession() {
    let result;
    try {
      result = await CP.teacherApi(sessionPath);
    } catch (err) {
      CP.setError(errorBox, "Can't reach the server.");
      return true; // the socket's backoff takes over
    }
    if (!result) return false;
    if (result.status === 403 || result.status === 404) {
      CP.setError(errorBox, result.status === 404 ? "This session doesn't exist." : "This session isn't yours.");
      setConn("closed", "no access");
      return false;
    }
    if (!result.ok) {
      CP.setError(errorBox, CP.errorText(result, "Couldn't load the session."));
      return true;
    }
    const s = result.data;
    document.getElementById("session-title").textContent = s.title;
    document.title = s.title + " · ClassPulse";
    document.getElementById("session-meta").textContent =
      "Started " + CP.formatTime(s.created_at, true) + (s.ended_at ? " · ended " + CP.formatTime(s.ended_at, true) : "");
    const link = document.getElementById("join-link");
    link.href = s.join_url;
    link.textContent = s.join_url;
    document.getElementById("copy-join").onclick = function (event) {
      CP.copyText(s.join_url, event.currentTarget);
    };
    document.getElementById("show-qr").onclick = function () {
      CP.showQr(s.join_url);
    };
    const qr = document.getElementById("join-qr");
    qr.onload = function () {
      qr.hidden = false;
    };
    qr.onerror = function () {
      qr.hidden = true;
    };
    qr.src = "/qr.svg?data=" + encodeURIComponent(s.join_url);
    if (s.ended_at) sessionEnded();
    return true;
  }

  // --- history -------------------------------------------------------------------------------
  function bucketKey(value) {
    const t = typeof value === "number" ? value * 1000 : Date.parse(value);
    return isNaN(t) ? String(value) : t;
  }

  function renderHistory(data) {
    const histLabels = Array.isArray(data.labels) && data.labels.length ? data.labels : labels;
    const columns = histLabels.concat(["uncertain"]);
    const groups = new Map();
    (data.buckets || []).forEach(function (b) {
      const key = bucketKey(b.bucket_start);
      let g = groups.get(key);
      if (!g) {
        g = { key: key, start: b.bucket_start, students: 0, frames: 0, withFace: 0, counts: {} };
        columns.forEach((c) => (g.counts[c] = 0));
        groups.set(key, g);
      }
      g.students += 1;
      g.frames += b.frames || 0;
      g.withFace += b.frames_with_face || 0;
      if (b.dominant && b.dominant in g.counts) g.counts[b.dominant] += 1;
    });
    const rows = Array.from(groups.values()).sort(function (a, b) {
      return typeof a.key === "number" && typeof b.key === "number" ? a.key - b.key : String(a.key).localeCompare(String(b.key));
    });
    const status = document.getElementById("history-status");
    if (!rows.length) {
      status.textContent = "No stored data for this session yet.";
      return;
    }
    status.textContent = rows.length + " buckets of " + (data.bucket_seconds || "?") + " s.";

    CP.fillTable(
      document.getElementById("history-table"),
      ["time", "students", "frames", "with face"].concat(columns),
      rows.map((g) => [CP.formatTime(g.start), g.students, g.frames, g.withFace].concat(columns.map((c) => g.counts[c])))
    );
    CP.show(document.getElementById("history-details"), true);

    if (!chartsAvailable()) return;
    CP.show(document.getElementById("history-chart-box"), true);
    if (historyChart) historyChart.destroy();
    historyChart = new Chart(document.getElementById("history-chart"), {
      type: "bar",
      data: {
        labels: rows.map((g) => CP.formatTime(g.start)),
        datasets: columns.map(function (label) {
          return {
            label: label,
            data: rows.map((g) => g.counts[label]),
            backgroundColor: label === "uncertain" ? "#bdbdbd" : colorOf(label),
          };
        }),
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      },
    });
  }

  document.getElementById("load-history").addEventListener("click", async function (event) {
    const button = event.currentTarget;
    const status = document.getElementById("history-status");
    button.disabled = true;
    status.textContent = "Loading…";
    try {
      const result = await CP.teacherApi(sessionPath + "/timeline");
      if (!result) return;
      if (!result.ok) {
        status.textContent = CP.errorText(result, "Couldn't load the history (HTTP " + result.status + ").");
        return;
      }
      renderHistory(result.data || {});
      button.textContent = "Reload history";
    } catch (err) {
      status.textContent = "Can't reach the server.";
    } finally {
      button.disabled = false;
    }
  });

  // --- per-student frame counters (backpressure made visible) --------------------------------
  // Self-contained: polls /stream-stats and writes into each tile what its page sends (edge
  // capture or camera frames, in words) and one small counters line.
  /** One student's frame counters as the tile shows them. Each is counted where it happens and
   * flushed on its own clock (the page reports its captures every 5 s, the gateway its counts
   * every second, workers with each batch), so a later stage can be a moment ahead of an
   * earlier one. Every frame analysed or dropped was sent, and every frame sent was captured:
   * each figure is shown as at least what follows from it, so the line never contradicts itself
   * (analysed + dropped <= sent <= captured). */
  function frameCounts(st) {
    const droppedBy = {};
    Object.entries(st.dropped || {}).forEach(function (e) {
      if (e[1] > 0) droppedBy[e[0]] = e[1];
    });
    const dropped = Object.values(droppedBy).reduce((n, v) => n + v, 0);
    const analysed = Number(st.processed) || 0;
    const sent = Math.max(Number(st.received) || 0, analysed + dropped);
    const captured = Math.max(Number(st.captured) || 0, sent);
    return { captured: captured, sent: sent, analysed: analysed, dropped: dropped, droppedBy: droppedBy };
  }

  function startStreamStats() {
    const EVERY_MS = 5000;
    function line(st) {
      const c = frameCounts(st);
      const why = Object.keys(c.droppedBy).map((k) => k.replace(/_/g, " ") + " " + c.droppedBy[k]).join(", ");
      return "frames: captured " + c.captured + " · sent " + c.sent + " · analysed " + c.analysed +
        " · dropped " + c.dropped + (why ? " (" + why + ")" : "");
    }
    /** What leaves this student's device, as the page last reported it. */
    // Why a student's device sends frames although edge capture is on (student.js says the same).
    const FALLBACK_TEXT = {
      unsupported: "the device can't run on-device detection",
      model_load_failed: "on-device detection couldn't be loaded",
      too_slow: "the device is too slow for on-device detection",
      error: "on-device detection stopped with an error",
    };
    function capture(st) {
      if (st.capture === "edge") {
        const ms = typeof st.detector_ms === "number" ? ", " + Math.round(st.detector_ms) + " ms per frame" : "";
        return "Face found on the device" + ms + "; only face crops are sent";
      }
      if (st.capture === "frames" && st.fallback) {
        return "Sending camera frames: " + (FALLBACK_TEXT[st.fallback] || "on-device detection is off") + " (face found on the server)";
      }
      if (st.capture === "frames") return "Sending camera frames (face found on the server)";
      return "";
    }
    function child(tile, cls) {
      let el = tile.querySelector("." + cls);
      if (!el) {
        el = document.createElement("div");
        el.className = cls + " muted";
        tile.appendChild(el);
      }
      return el;
    }
    async function poll() {
      let result;
      try {
        result = await CP.teacherApi(sessionPath + "/stream-stats");
      } catch (err) {
        return; // the next poll tries again
      }
      if (!result || !result.ok) return;
      Object.entries(result.data.students || {}).forEach(function (entry) {
        const s = students.get(entry[0]);
        if (!s) return;
        const mode = child(s.el, "capture-mode");
        mode.dataset.capture = entry[1].capture || "unknown";
        mode.dataset.fallback = entry[1].fallback || "";
        mode.textContent = capture(entry[1]);
        const stats = child(s.el, "stream-stats");
        const c = frameCounts(entry[1]);
        ["captured", "sent", "analysed", "dropped"].forEach((k) => (stats.dataset[k] = String(c[k])));
        stats.textContent = line(entry[1]);
      });
    }
    poll();
    setInterval(poll, EVERY_MS);
  }

  // --- alerts (worker/alerts.py): the open ones, opened and closed by live messages -----------
  const openAlerts = new Map(); // alert id -> alert

  function renderAlerts() {
    const list = document.getElementById("alerts");
    const items = Array.from(openAlerts.values()).sort((a, b) => String(a.started_at).localeCompare(String(b.started_at)));
    list.replaceChildren.apply(list, items.map(function (a) {
      const li = document.createElement("li");
      li.className = "alert-item";
      li.dataset.rule = a.rule;
      li.dataset.alertId = String(a.id);
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = "since " + CP.formatTime(a.started_at) + " · ";
      const text = document.createElement("span");
      text.textContent = a.message;
      li.append(when, text);
      return li;
    }));
    document.getElementById("alert-count").textContent = String(items.length);
    CP.show(document.getElementById("no-alerts"), items.length === 0);
  }

  function applyAlert(msg) {
    if (!msg.alert) return;
    if (msg.state === "open") openAlerts.set(msg.alert.id, msg.alert);
    else openAlerts.delete(msg.alert.id);
    renderAlerts();
  }

  async function loadAlerts() {
    let result;
    try {
      result = await CP.teacherApi(sessionPath + "/alerts?open=1");
    } catch (err) {
      return; // the next snapshot (reconnect) tries again
    }
    if (!result || !result.ok || !Array.isArray(result.data)) return;
    openAlerts.clear();
    result.data.forEach((a) => openAlerts.set(a.id, a));
    renderAlerts();
  }

  // --- privacy policy (issue 5): the mode in force decides what this page may show ----------
  // per_student: tiles with estimates. aggregate_only: tiles with presence only, and the class
  // mix from the aggregator, hidden while fewer than min_group_size students are present.
  // off: presence only. The server already strips what a mode forbids; this says why it's absent.
  const policy = { mode: "per_student", minGroup: 5, klass: null };
  PRESENCE_TEXT.withdrawn = "withdrew";
  PRESENCE_TEXT.no_analysis = "attending, no analysis";
  const POLICY_TEXT = {
    per_student: "Policy: per-student estimates. Views of this page are recorded in the audit log.",
    aggregate_only: "Policy: class aggregates only. No per-student estimates are shown or stored.",
    off: "Policy: emotion inference off. Presence only: no estimates are made, shown or stored.",
  };

  function applyPolicy(p, klass) {
    if (p && p.emotion_mode) {
      policy.mode = p.emotion_mode;
      policy.minGroup = Number(p.min_group_size) || policy.minGroup;
    }
    showCalibration();
    if (klass !== undefined) policy.klass = klass;
    if (policy.mode !== "per_student") {
      // Estimates received under the earlier mode go too.
      students.forEach(function (s) {
        if (s.emotion) s.emotion = Object.assign({}, s.emotion, { emotion: null, confidence: null, probs: null });
        renderTile(s);
      });
    }
    if (policy.mode !== "aggregate_only") policy.klass = null;
    renderPolicy();
    scheduleDistribution();
  }

  function applyClassUpdate(msg) {
    if (policy.mode !== "aggregate_only") return;
    policy.klass = msg;
    renderPolicy();
    scheduleDistribution();
  }

  function renderPolicy() {
    root.dataset.emotionMode = policy.mode;
    const banner = document.getElementById("policy-banner");
    banner.dataset.mode = policy.mode;
    banner.textContent = POLICY_TEXT[policy.mode] || "Policy: " + policy.mode;
    CP.show(banner, true);
    let note = "";
    if (policy.mode === "off") {
      note = "Emotion inference is off: there is no class mix to show.";
    } else if (policy.mode === "aggregate_only") {
      const k = policy.klass;
      const present = k ? Number(k.present) || 0 : 0;
      note = !k || k.suppressed
        ? "Fewer than " + policy.minGroup + " students present (" + present + " now): the class mix is not shown."
        : present + " students present.";
    }
    const el = document.getElementById("class-note");
    el.textContent = note;
    CP.show(el, Boolean(note));
  }

  /** Class counts when tiles carry no estimates: from the aggregator (or none at all). */
  function policyCounts() {
    if (policy.mode === "per_student") return null;
    const counts = {};
    labels.forEach((label) => (counts[label] = 0));
    let noFace = 0;
    students.forEach(function (s) {
      if (viewOf(s).presence === "no_face") noFace += 1;
    });
    const k = policy.klass;
    if (policy.mode === "off" || !k || k.suppressed || !k.counts) return { counts: counts, uncertain: 0, noFace: noFace };
    Object.keys(k.counts).forEach(function (label) {
      counts[label] = Number(k.counts[label]) || 0;
    });
    return { counts: counts, uncertain: Number(k.uncertain) || 0, noFace: noFace };
  }

  // --- start ---------------------------------------------------------------------------------
  setInterval(function () {
    tiles.querySelectorAll(".ago").forEach(function (el) {
      const t = Number(el.dataset.t);
      if (t) el.textContent = CP.ago(t);
    });
    students.forEach(function (s) {
      if (s.emotion && !s.shownStale && Date.now() - (s.emotionAt || 0) > NO_DATA_S * 1000) renderTile(s);
    });
  }, 1000);
  setInterval(sampleTimeline, SAMPLE_MS);
  setupCharts();
  updateCount();
  loadSession().then(function (go) {
    if (go) live.start();
    if (go) startStreamStats();
  });
})();
