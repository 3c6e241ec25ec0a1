/* The parts of the page the teacher folds or switches, remembered in this browser: the join
 * link and notices (folded away once the class has started) and the frame counters on tiles. */

import { recall, remember } from "../lib/dom.js";
import { root, state } from "./state.js";

const INFO_KEY = "classpulse.dashboard.classInfo"; // "open" | "closed": the teacher's choice
const classInfo = document.getElementById("class-info");

export function foldClassInfo() {
  if (state.students.size === 0) {
    classInfo.open = true; // nobody has joined yet: the join link is what the teacher needs
    return;
  }
  classInfo.open = recall(INFO_KEY) === "open";
}
classInfo.querySelector("summary").addEventListener("click", () => {
  remember(INFO_KEY, classInfo.open ? "closed" : "open"); // the state it goes to
});
foldClassInfo();

const DETAILS_KEY = "classpulse.dashboard.counters";
const detailsButton = document.getElementById("tile-details");
function showDetails(on) {
  root.dataset.details = on ? "on" : "off";
  detailsButton.setAttribute("aria-pressed", on ? "true" : "false");
}
detailsButton.addEventListener("click", () => {
  const on = root.dataset.details !== "on";
  showDetails(on);
  remember(DETAILS_KEY, on ? "on" : "off");
});
showDetails(recall(DETAILS_KEY) === "on");
