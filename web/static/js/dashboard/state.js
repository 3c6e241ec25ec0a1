/* What the live dashboard knows, shared by its modules: the session, the model's labels, the
 * policy in force and one record per student. */

export const root = document.getElementById("dashboard");
export const sessionId = root.dataset.sessionId;
export const sessionPath = "/api/sessions/" + encodeURIComponent(sessionId);

export const state = {
  // Until the snapshot brings the model's own label order.
  labels: ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
  // The labels the server counts as negative (records.reports.NEGATIVE), rendered into the page.
  negative: (root.dataset.negative || "").split(" ").filter(Boolean),
  calibration: null,
  // per_student: tiles with estimates. aggregate_only: tiles with presence only, and the class
  // mix from the aggregator (klass), hidden while fewer than min_group_size students are present.
  // off: presence only. The server already strips what a mode forbids.
  policy: { mode: "per_student", minGroup: 5, klass: null },
  // Whether the policy observes attention (docs/attention.md): true/false from a policy message;
  // null until one says (a snapshot from a server that doesn't send it): then the fields
  // themselves tell, as the server withholds them when it is off.
  attention: null,
  // The span a student's share facing the screen covers (contracts.ATTENTION_WINDOW_S).
  attentionWindowS: Number(root.dataset.attentionWindow) || null,
  students: new Map(), // student_id -> {id, name, withdrawn, presence, emotion, emotionAt, el, order, look, attention}
  joinedOrder: 0,
};
