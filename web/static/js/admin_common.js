/* What the admin pages share: API calls that turn a 401 into the login and a 403 into the
 * "administrators only" state, a confirmation <dialog>, downloads, and table rows.
 * A module the admin pages import; the pages are shells and the API enforces the role. */
import * as CP from "./lib/all.js";

let denied = false;

/** Show the page's "administrators only" state instead of its content. */
function showDenied() {
  if (denied) return;
  denied = true;
  const content = document.getElementById("admin-content");
  const notice = document.getElementById("admin-denied");
  if (content) content.hidden = true;
  if (notice) {
    notice.hidden = false;
    notice.focus();
  }
}

/** An admin API call: 401 → login page (resolves to null), 403 → the admins-only state
 * (resolves to null); otherwise {ok, status, data} as ClassPulse.api gives it. */
async function call(path, options) {
  const result = await CP.api(path, options);
  if (result.status === 401) {
    CP.toLogin();
    return null;
  }
  if (result.status === 403) {
    showDenied();
    return null;
  }
  return result;
}

/** A raw fetch for downloads (the body is read by the caller), with the same 401/403 rules. */
async function fetchFile(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    CP.toLogin();
    return null;
  }
  if (response.status === 403) {
    showDenied();
    return null;
  }
  return response;
}

/** The error text of a fetch Response's JSON body ({"detail": ...}), or a fallback. */
async function responseError(response, fallback) {
  try {
    const data = await response.json();
    if (data && typeof data.detail === "string") return data.detail;
  } catch (_err) {
    /* not JSON */
  }
  return fallback;
}

/** Offer a Blob as a file download. */
function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(function () {
    URL.revokeObjectURL(url);
  }, 10000);
}

/** The file name a Content-Disposition header gives, or a fallback. */
function fileName(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(header);
  return match ? match[1] : fallback;
}

/** Ask for confirmation in the shared <dialog>: title, paragraphs or list items (strings, or
 * {heading, items}), the confirm button's label. Resolves to true when confirmed. Focus goes
 * to Cancel (the safe choice) and back to what had it when the dialog closes. */
function confirm(opts) {
  const dialog = document.getElementById("confirm-dialog");
  const opener = document.activeElement;
  document.getElementById("confirm-title").textContent = opts.title;
  const body = document.getElementById("confirm-body");
  body.replaceChildren();
  (opts.body || []).forEach(function (part) {
    if (typeof part === "string") {
      const p = document.createElement("p");
      p.textContent = part;
      body.appendChild(p);
      return;
    }
    const h = document.createElement("h3");
    h.textContent = part.heading;
    const ul = document.createElement("ul");
    part.items.forEach(function (item) {
      const li = document.createElement("li");
      li.textContent = item;
      ul.appendChild(li);
    });
    body.appendChild(h);
    body.appendChild(ul);
  });
  const ok = document.getElementById("confirm-ok");
  ok.textContent = opts.confirm || "Confirm";
  ok.className = opts.danger === false ? "primary" : "danger";
  dialog.returnValue = "";
  return new Promise(function (resolve) {
    dialog.addEventListener(
      "close",
      function () {
        if (opener && typeof opener.focus === "function") opener.focus();
        resolve(dialog.returnValue === "ok");
      },
      { once: true },
    );
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

/** A table row: cells as text; the first is a row header (<th scope="row">) when rowHeader.
 * A cell may be a Node (e.g. buttons) instead of text. */
function row(values, rowHeader) {
  const tr = document.createElement("tr");
  values.forEach(function (value, i) {
    const cell = document.createElement(i === 0 && rowHeader ? "th" : "td");
    if (i === 0 && rowHeader) cell.scope = "row";
    if (value instanceof Node) cell.appendChild(value);
    else cell.textContent = value === null || value === undefined ? "" : String(value);
    tr.appendChild(cell);
  });
  return tr;
}

/** Fill a table's header row (scope="col") and body rows (<tr> elements): api.js's. */
const fill = CP.fillTable;

function button(label, onClick, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

/** Today as YYYY-MM-DD in UTC (the API's days are UTC days). */
function utcDay(offsetDays) {
  const d = new Date(Date.now() + (offsetDays || 0) * 86400000);
  return d.toISOString().slice(0, 10);
}

/** Options of a <select> from [value, label] pairs, keeping its first ("any") option. */
function options(select, pairs) {
  const first = select.options[0];
  const items = pairs.map(function (pair) {
    const o = document.createElement("option");
    o.value = pair[0];
    o.textContent = pair[1];
    return o;
  });
  select.replaceChildren.apply(select, [first].concat(items));
}

export { button, call, confirm, fetchFile, fileName, fill, options, responseError, row, saveBlob, showDenied, utcDay };
