/* ClassPulse: small shared helpers for every page: API calls, WebSocket URLs, backoff, time.
 * Exposed as window.ClassPulse; no framework, no build step. */
(function () {
  "use strict";

  const CSRF_HEADER = "X-ClassPulse-CSRF";

  /** Call the JSON API on this origin. Non-GET requests carry the CSRF header that the
   * gateway requires for cookie-authenticated calls. Resolves to {ok, status, data}; never
   * throws for HTTP errors (network failures reject). */
  async function api(path, options) {
    const opts = options || {};
    const method = (opts.method || "GET").toUpperCase();
    const headers = { Accept: "application/json" };
    if (method !== "GET" && method !== "HEAD") {
      headers[CSRF_HEADER] = "1";
      headers["Content-Type"] = "application/json";
    }
    if (opts.token) headers.Authorization = "Bearer " + opts.token;
    const response = await fetch(path, {
      method: method,
      headers: headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      credentials: "same-origin",
      cache: "no-store",
    });
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("application/json")) {
      try {
        data = await response.json();
      } catch (_err) {
        data = null;
      }
    }
    return { ok: response.ok, status: response.status, data: data };
  }

  /** Send the browser to the login page, coming back here afterwards. */
  function toLogin() {
    const next = location.pathname + location.search;
    location.assign("/login?next=" + encodeURIComponent(next));
  }

  /** A teacher API call: a 401 goes to the login page (resolves to null in that case). */
  async function teacherApi(path, options) {
    const result = await api(path, options);
    if (result.status === 401) {
      toLogin();
      return null;
    }
    return result;
  }

  /** The error text the API gave (FastAPI's {"detail": ...}), or a fallback. */
  function errorText(result, fallback) {
    const detail = result && result.data && result.data.detail;
    if (typeof detail === "string" && detail) return detail;
    if (Array.isArray(detail) && detail.length && detail[0].msg) return detail[0].msg;
    return fallback;
  }

  /** Subprotocols that carry a token in the WebSocket handshake: never in the URL, where
   * access logs and proxies would keep it. The server selects "classpulse". */
  function tokenProtocols(token) {
    return ["classpulse", "classpulse.token." + token];
  }

  /** ws:// or wss:// URL for a path on this host; never a hard-coded host. */
  function wsUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  /** Exponential backoff with jitter: 1 s, 2 s, 4 s ... capped at 30 s; each delay is drawn
   * from [d/2, d] so a classroom of pages that lost the network together don't reconnect
   * in lockstep. */
  function backoff(minMs, maxMs) {
    const min = minMs || 1000;
    const max = maxMs || 30000;
    let attempt = 0;
    return {
      next: function () {
        const ceiling = Math.min(max, min * Math.pow(2, attempt));
        attempt += 1;
        return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
      },
      reset: function () {
        attempt = 0;
      },
    };
  }

  /** A WebSocket that reconnects with backoff after drops, keeps idle proxies from closing it
   * (a ping every 25 s) and gives up on a socket that stays silent for a minute instead of
   * waiting for a close handshake that a dead network never delivers.
   * opts: url() → string; protocols() → subprotocols (e.g. tokenProtocols(t)); onOpen(ws);
   * onMessage(event); onClose(event) → false to stop retrying;
   * onState(state, text) with state connecting | open | reconnecting; ping: the text to send. */
  function reconnectingSocket(opts) {
    const retry = backoff(1000, 30000);
    const PING_MS = 25000;
    const SILENT_MS = 60000;
    let ws = null;
    let retryTimer = null;
    let countdownTimer = null;
    let lastSeen = 0;
    let stopped = false;

    function clearTimers() {
      clearTimeout(retryTimer);
      clearInterval(countdownTimer);
      retryTimer = null;
    }

    function connect() {
      clearTimers();
      if (stopped) return;
      opts.onState("connecting", "connecting…");
      const sock = new WebSocket(opts.url(), opts.protocols ? opts.protocols() : []);
      sock.binaryType = "arraybuffer";
      ws = sock;
      lastSeen = Date.now();
      sock.onopen = function () {
        lastSeen = Date.now();
        opts.onState("open", "connected");
        if (opts.onOpen) opts.onOpen(sock);
      };
      sock.onmessage = function (event) {
        lastSeen = Date.now();
        opts.onMessage(event, sock);
      };
      sock.onclose = function (event) {
        if (ws !== sock) return;
        ws = null;
        if (stopped) return;
        if (opts.onClose && opts.onClose(event) === false) {
          stopped = true;
          return;
        }
        scheduleReconnect();
      };
    }

    function scheduleReconnect() {
      clearTimers();
      const delay = retry.next();
      const due = Date.now() + delay;
      const tick = function () {
        const s = Math.max(0, Math.ceil((due - Date.now()) / 1000));
        opts.onState("reconnecting", "disconnected — retrying in " + s + " s");
      };
      tick();
      countdownTimer = setInterval(tick, 1000);
      retryTimer = setTimeout(connect, delay);
    }

    /** Abandon the current socket now (its close event is ignored) and reconnect later. */
    function drop(code, reason) {
      const sock = ws;
      ws = null;
      if (sock) {
        try {
          sock.close(code || 4000, reason || "");
        } catch (_err) {
          /* already closing */
        }
      }
      if (!stopped) scheduleReconnect();
    }

    setInterval(function () {
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - lastSeen > SILENT_MS) drop(4000, "silent");
      else if (opts.ping) ws.send(opts.ping);
    }, PING_MS);

    // Back online: don't sit out the rest of a long backoff.
    window.addEventListener("online", function () {
      if (!ws && retryTimer && !stopped) {
        retry.reset();
        connect();
      }
    });

    return {
      start: connect,
      /** The server accepted us (first real message): later drops start from 1 s again. */
      recovered: function () {
        retry.reset();
      },
      drop: drop,
      /** Close for good: no reconnect. */
      stop: function (code, reason) {
        stopped = true;
        clearTimers();
        const sock = ws;
        ws = null;
        if (sock) sock.close(code || 1000, reason || "");
      },
      /** The open socket, or null. */
      open: function () {
        return ws && ws.readyState === WebSocket.OPEN ? ws : null;
      },
    };
  }

  /** What to show for one student, from the latest presence update (gateway: connected,
   * camera off, withdrawn...) and the latest emotion update (aggregator). A connection-level
   * state newer than the estimate wins over it; a withdrawal always wins. */
  function studentView(presence, emotion, withdrawn) {
    const p = presence;
    const e = emotion;
    const v = { presence: "waiting", emotion: null, confidence: null, probs: null, faces: null, t: 0 };
    v.t = Math.max(p && p.t ? p.t : 0, e && e.t ? e.t : 0);
    if (withdrawn || (p && p.presence === "withdrawn") || (e && e.presence === "withdrawn")) {
      v.presence = "withdrawn";
    } else if (p && p.presence && p.presence !== "present" && (!e || p.t >= e.t)) {
      v.presence = p.presence;
    } else if (e) {
      v.presence = e.presence || "present";
      if (v.presence === "present") {
        v.emotion = e.emotion || null;
        v.confidence = typeof e.confidence === "number" ? e.confidence : null;
        v.probs = e.probs || null;
      }
      v.faces = typeof e.faces === "number" ? e.faces : null;
    } else if (p) {
      v.presence = p.presence || "present";
    }
    return v;
  }

  /** "just now", "12 s ago", "3 min ago", "2 h ago" for an epoch-seconds time. */
  function ago(epochSeconds) {
    if (!epochSeconds) return "never";
    const s = Math.max(0, Math.round(Date.now() / 1000 - epochSeconds));
    if (s < 2) return "just now";
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  /** A date-time for display, from an ISO string or epoch seconds. */
  function formatTime(value, withDate) {
    if (value === null || value === undefined || value === "") return "";
    const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    if (Number.isNaN(d.getTime())) return String(value);
    return withDate ? d.toLocaleString() : d.toLocaleTimeString();
  }

  function show(el, visible) {
    if (el) el.hidden = !visible;
  }

  function setError(el, message) {
    if (!el) return;
    el.textContent = message || "";
    el.hidden = !message;
  }

  /** Copy text to the clipboard, falling back to selecting it where the API is unavailable. */
  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      if (button) {
        const label = button.textContent;
        button.textContent = "Copied";
        setTimeout(function () {
          button.textContent = label;
        }, 1500);
      }
    } catch (_err) {
      window.prompt("Copy the link:", text);
    }
  }

  /** Open the shared QR dialog (a server-rendered SVG of a join link) for projecting. */
  function showQr(joinUrl) {
    const dialog = document.getElementById("qr-dialog");
    if (!dialog) return;
    document.getElementById("qr-dialog-img").src = "/qr.svg?data=" + encodeURIComponent(joinUrl);
    document.getElementById("qr-dialog-url").textContent = joinUrl;
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
  }

  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async function () {
      try {
        await api("/api/auth/logout", { method: "POST" });
      } finally {
        location.assign("/login");
      }
    });
  }

  // One colour per FER label on every page's charts; labels of other models cycle the spares.
  const EMOTION_COLORS = {
    angry: "#c62828",
    disgust: "#6d4c41",
    fear: "#7b1fa2",
    happy: "#2e7d32",
    sad: "#1565c0",
    surprise: "#ef6c00",
    neutral: "#757575",
  };
  const SPARE_COLORS = ["#00838f", "#ad1457", "#9e9d24", "#4527a0"];

  function emotionColor(label, labels) {
    if (EMOTION_COLORS[label]) return EMOTION_COLORS[label];
    const i = labels ? labels.indexOf(label) : -1;
    return SPARE_COLORS[Math.max(i, 0) % SPARE_COLORS.length];
  }

  /* Fill a <table> (with a <thead> and a <tbody>): a header row, then one row per array of
   * values, each cell as text (never HTML), or per <tr> already built (cells with markup). */
  function fillTable(table, headers, rows) {
    const head = document.createElement("tr");
    headers.forEach(function (name) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      head.appendChild(th);
    });
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren.apply(
      table.tBodies[0],
      rows.map(function (values) {
        if (values instanceof Element) return values;
        const tr = document.createElement("tr");
        values.forEach(function (value) {
          const td = document.createElement("td");
          td.textContent = String(value);
          tr.appendChild(td);
        });
        return tr;
      }),
    );
  }

  window.ClassPulse = {
    api: api,
    teacherApi: teacherApi,
    errorText: errorText,
    toLogin: toLogin,
    wsUrl: wsUrl,
    tokenProtocols: tokenProtocols,
    backoff: backoff,
    reconnectingSocket: reconnectingSocket,
    studentView: studentView,
    ago: ago,
    formatTime: formatTime,
    show: show,
    setError: setError,
    copyText: copyText,
    showQr: showQr,
    emotionColor: emotionColor,
    fillTable: fillTable,
  };
})();
