/* WebSockets on this origin: URLs, token subprotocols, reconnecting with backoff. */

/** Subprotocols that carry a token in the WebSocket handshake: never in the URL, where
 * access logs and proxies would keep it. The server selects "classpulse". */
export function tokenProtocols(token) {
  return ["classpulse", "classpulse.token." + token];
}

/** ws:// or wss:// URL for a path on this host; never a hard-coded host. */
export function wsUrl(path) {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
}

/** Exponential backoff with jitter: 1 s, 2 s, 4 s ... capped at 30 s; each delay is drawn
 * from [d/2, d] so a classroom of pages that lost the network together don't reconnect
 * in lockstep. */
export function backoff(minMs, maxMs) {
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
export function reconnectingSocket(opts) {
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
