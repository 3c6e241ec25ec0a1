/* Small DOM helpers every page uses: show/hide, error boxes, copy, the QR dialog, tables. */

export function show(el, visible) {
  if (el) el.hidden = !visible;
}

export function setError(el, message) {
  if (!el) return;
  el.textContent = message || "";
  el.hidden = !message;
}

/** Copy text to the clipboard, falling back to selecting it where the API is unavailable. */
export async function copyText(text, button) {
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
export function showQr(joinUrl) {
  const dialog = document.getElementById("qr-dialog");
  if (!dialog) return;
  document.getElementById("qr-dialog-img").src = "/qr.svg?data=" + encodeURIComponent(joinUrl);
  document.getElementById("qr-dialog-url").textContent = joinUrl;
  if (typeof dialog.showModal === "function") dialog.showModal();
  else dialog.setAttribute("open", "");
}

export function fillTable(table, headers, rows) {
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

/** A value this browser remembers for the teacher (localStorage), or null where storage is off. */
export function recall(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage off: the default
  }
}

/** Remember a value in this browser; silently not remembered where storage is off. */
export function remember(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    /* not remembered */
  }
}
