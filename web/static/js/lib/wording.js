/* What every page says about a student and a time: the student view, "12 s ago", dates, the
 * colour of each emotion. */

/** What to show for one student, from the latest presence update (gateway: connected,
 * camera off, withdrawn...) and the latest emotion update (aggregator). A connection-level
 * state newer than the estimate wins over it; a withdrawal always wins. */
export function studentView(presence, emotion, withdrawn) {
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
export function ago(epochSeconds) {
  if (!epochSeconds) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - epochSeconds));
  if (s < 2) return "just now";
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h ago";
}

/** A date-time for display, from an ISO string or epoch seconds. */
export function formatTime(value, withDate) {
  if (value === null || value === undefined || value === "") return "";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return withDate ? d.toLocaleString() : d.toLocaleTimeString();
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

export function emotionColor(label, labels) {
  if (EMOTION_COLORS[label]) return EMOTION_COLORS[label];
  const i = labels ? labels.indexOf(label) : -1;
  return SPARE_COLORS[Math.max(i, 0) % SPARE_COLORS.length];
}

/* Fill a <table> (with a <thead> and a <tbody>): a header row, then one row per array of
 * values, each cell as text (never HTML), or per <tr> already built (cells with markup). */

/** A percentage for display: 0.42 → "42 %". */
export function pct(p) {
  return Math.round(p * 100) + " %";
}

/** A student's presence in words (the dashboard's tiles). */
export const PRESENCE_TEXT = {
  present: "present",
  no_face: "no face",
  camera_off: "camera off",
  disconnected: "disconnected",
  // The socket dropped without a goodbye (Wi-Fi, a sleeping device): the page is retrying.
  reconnecting: "reconnecting…",
  withdrawn: "withdrew",
  no_analysis: "attending, no analysis",
  waiting: "not started",
};

/** Why a device sends camera frames although edge capture is on (the reasons are
 * classpulse.contracts.CAPTURE_FALLBACKS). ``own``: said to the student about their own device. */
export function fallbackText(reason, own) {
  switch (reason) {
    case "unsupported":
      return (own ? "this browser" : "the device") + " can't run on-device detection";
    case "model_load_failed":
      return "on-device detection couldn't be loaded";
    case "too_slow":
      return (own ? "this device" : "the device") + " is too slow for on-device detection";
    case "error":
      return "on-device detection stopped with an error";
    default:
      return "on-device detection is off";
  }
}

// --- attention (docs/attention.md): the raw observation of head orientation, in words ---------
// Never a judgement or a score of a person: what was observed, over which span.

/** A span of time for display: "40 s" under two minutes, then "3 min", then "1 h 5 min". */
export function spanText(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 120) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min";
  return Math.floor(m / 60) + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
}

/** One student's share of observed frames facing the screen over the server's window
 * (``windowS``, contracts.ATTENTION_WINDOW_S as the page was given it): "facing the screen
 * 80 % of the last 5 min"; "" when not observed. */
export function facingText(share, windowS) {
  if (typeof share !== "number" || !Number.isFinite(share)) return "";
  const p = Math.min(1, Math.max(0, share));
  return "facing the screen " + pct(p) + (windowS > 0 ? " of the last " + spanText(windowS) : "");
}

/** While a student does not face the screen: "looking away for 40 s"; "" otherwise. */
export function awayText(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "";
  return "looking away for " + spanText(seconds);
}

/** The class now: "18 of 24 facing the screen" (of the students whose head orientation is
 * observed now); "" when nobody's is. */
export function facingClassText(facing, observed) {
  if (!observed) return "";
  return facing + " of " + observed + " facing the screen";
}

/** Stored buckets' share facing the screen in a sentence (the history page's charts' text
 * alternative): over all observed frames, and the lowest and highest bucket; "" when no row
 * carries one. ``rows``: {bucket_start, attention_frames, facing_frames, facing_share}. */
export function facingRowsText(rows) {
  const seen = rows.filter((r) => typeof r.facing_share === "number");
  if (!seen.length) return "";
  const observed = seen.reduce((n, r) => n + (Number(r.attention_frames) || 0), 0);
  const facing = seen.reduce((n, r) => n + (Number(r.facing_frames) || 0), 0);
  const shares = seen.map((r) => r.facing_share);
  const overall = observed ? pct(facing / observed) + " of " + observed + " observed frames faced the screen; " : "";
  return (
    "From " +
    formatTime(seen[0].bucket_start) +
    " to " +
    formatTime(seen[seen.length - 1].bucket_start) +
    ": " +
    overall +
    "per time bucket lowest " +
    pct(Math.min(...shares)) +
    ", highest " +
    pct(Math.max(...shares)) +
    " (" +
    seen.length +
    " of " +
    rows.length +
    " buckets observed)."
  );
}

/** Said to a student about their own camera while the policy observes head orientation
 * (``attention`` true); "" otherwise. Under the emotion mode "off" it is all that is observed
 * from their face. */
export function observedText(attention, mode) {
  if (attention !== true) return "";
  return mode === "off"
    ? "Observed from your camera: whether your head faces the screen (its orientation only); no expression."
    : "Also observed: whether your head faces the screen (its orientation, not an expression).";
}
