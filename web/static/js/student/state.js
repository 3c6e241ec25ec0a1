/* What the student page knows, shared by its modules: the join, the server's config, the
 * camera, this connection's frame window, and the counters this tab keeps. */

import { DEFAULT_CONFIG } from "./config.js";

export const $ = (id) => document.getElementById(id);
export const root = $("student");
export const code = root.dataset.joinCode;
export const STORE_KEY = "classpulse.join." + code;
export const COUNTS_KEY = STORE_KEY + ".counts";

export const state = {
  join: null, // {token, student_id, session_id, session_title, display_name, expires_at, analysis}
  consentVersion: null,
  declined: false, // consent declined: joined without analysis
  finished: false, // withdrawn, expired or taken over: no camera, no reconnect
  sessionOver: false,
  stream: null, // the camera's MediaStream while it is on
  config: { ...DEFAULT_CONFIG },
  configSeen: false, // the server has said what to send (or stayed silent): see captureText
  // The policy's emotion mode, from the latest config, policy message or /api/student/me.
  policyMode: null,
  // Whether the policy observes head orientation (docs/attention.md), from the latest policy
  // message or /api/student/me; null until one says.
  attention: null,
  // Per connection: frames are numbered from 1 and acknowledged in order.
  configured: false,
  sentSeq: 0,
  ackSeq: 0,
  lastAckAt: 0,
  encoding: false, // a capture is being encoded (JPEG) or detected (edge)
  capturedSinceReport: 0, // reported to the server, which counts frames per student
};

/** Whether this student joined with analysis (consent given). */
export function analysing() {
  return !state.join || state.join.analysis !== false;
}
