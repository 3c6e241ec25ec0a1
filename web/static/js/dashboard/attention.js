/* Attention on the dashboard without the DOM (docs/attention.md): what a tile shows of a
 * student's head orientation, the class's count now, and the session's series of that count in
 * bounded memory. An observation, never a judgement: nothing here feeds "needs a look".
 * Unit-tested in web/tests/dashboard_attention.test.js. */

import { NO_DATA_S } from "./logic.js";

// The live fields that carry attention (classpulse/contracts.py ATTENTION_FIELDS; the unit test
// reads that tuple and fails if they drift apart).
export const ATTENTION_FIELDS = ["facing", "facing_share", "away_s"];

export const NOT_OBSERVED = Object.freeze({ facing: null, share: null, away: null });

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** A live update without its attention fields: what the page keeps once the policy no longer
 * observes attention (the server withholds them from then on; this forgets earlier ones). */
export function withoutAttention(update) {
  if (!update) return update;
  const next = Object.assign({}, update);
  for (const f of ATTENTION_FIELDS) next[f] = null;
  return next;
}

/** What a tile shows of one student's attention now: ``facing`` (bool), ``share`` (0..1 over
 * the server's window) and ``away`` (seconds not facing, counted on from the update by this
 * browser's clock), each null when not observed. ``s``: {emotion (the latest update),
 * emotionAt (ms, this browser's clock), withdrawn}; ``presence``: the tile's honest presence.
 * Nothing is shown from an update older than NO_DATA_S: no frames, no observation. */
export function attentionOf(s, presence, now) {
  const e = s.emotion;
  if (!e || s.withdrawn || presence !== "present") return NOT_OBSERVED;
  const age = (now - (s.emotionAt || 0)) / 1000;
  if (age > NO_DATA_S) return NOT_OBSERVED;
  const facing = typeof e.facing === "boolean" ? e.facing : null;
  const share = finite(e.facing_share) ? Math.min(1, Math.max(0, e.facing_share)) : null;
  const away = facing === false && finite(e.away_s) ? Math.max(0, e.away_s) + Math.max(0, age) : null;
  return { facing: facing, share: share, away: away };
}

/** Whether any observation is shown: one of the three is known. */
export function observed(a) {
  return a.facing !== null || a.share !== null || a.away !== null;
}

/** The class now from the tiles' attention: how many students' head orientation is observed
 * now and how many of them face the screen. */
export function classFacing(attentions) {
  let seen = 0;
  let facing = 0;
  for (const a of attentions) {
    if (a.facing === null) continue;
    seen += 1;
    if (a.facing) facing += 1;
  }
  return { facing: facing, observed: seen };
}

// --- the session's series, in bounded memory -------------------------------------------------
// A point sums ``n`` samples (facing and observed counts, so a merged point's share is weighted
// by how many students were observed). When the series is full, neighbours merge pairwise and a
// point covers twice the samples from then on: the whole session stays on the chart, at a
// coarser step the longer it runs, and memory never grows past ``max`` points.

export function newSeries(max) {
  return { max: Math.max(2, Math.floor(max)), span: 1, points: [] };
}

/** One sample (``t`` epoch ms) into the series; returns it. */
export function addSample(series, t, count) {
  const last = series.points[series.points.length - 1];
  if (last && last.n < series.span) {
    last.facing += count.facing;
    last.observed += count.observed;
    last.n += 1;
    last.end = t;
  } else {
    series.points.push({ t: t, end: t, facing: count.facing, observed: count.observed, n: 1 });
  }
  if (series.points.length > series.max) {
    const merged = [];
    for (let i = 0; i < series.points.length; i += 2) {
      const a = series.points[i];
      const b = series.points[i + 1];
      merged.push(
        b ? { t: a.t, end: b.end, facing: a.facing + b.facing, observed: a.observed + b.observed, n: a.n + b.n } : a,
      );
    }
    series.points = merged;
    series.span *= 2;
  }
  return series;
}

/** A point's share facing the screen; null when nobody was observed (a gap, never 0 %). */
export function shareOf(point) {
  return point.observed ? point.facing / point.observed : null;
}

/** The series in a sentence's numbers: the latest share, the lowest and highest, and the span
 * covered (ms); null when no point has an observation. */
export function seriesRange(series) {
  const shares = series.points.map(shareOf).filter((x) => x !== null);
  if (!shares.length) return null;
  const first = series.points[0];
  const last = series.points[series.points.length - 1];
  return {
    latest: shares[shares.length - 1],
    low: Math.min(...shares),
    high: Math.max(...shares),
    from: first.t,
    to: last.end,
  };
}
