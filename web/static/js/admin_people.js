/* People: list accounts, add one (with a one-time set-password link), deactivate or
 * reactivate, change the role, make a new set-password link. */

import * as A from "./admin_common.js";
import * as CP from "./lib/all.js";

const status = document.getElementById("people-status");
const tbody = document.querySelector("#people-table tbody");
const form = document.getElementById("add-form");
const addError = document.getElementById("add-error");
const panel = document.getElementById("link-panel");
let people = [];

function showLink(email, link) {
  document.getElementById("link-for").textContent = "For " + email + ":";
  const a = document.getElementById("link-url");
  a.href = link.url;
  a.textContent = link.url;
  document.getElementById("link-expires").textContent = CP.formatTime(link.expires_at, true);
  panel.hidden = false;
  panel.focus();
}

document.getElementById("link-copy").addEventListener("click", function (event) {
  CP.copyText(document.getElementById("link-url").textContent, event.currentTarget);
});

function actions(user) {
  const box = document.createElement("div");
  box.className = "row-actions";
  const label = user.email;
  const toggle = A.button(
    user.active ? "Deactivate" : "Reactivate",
    function () {
      setActive(user, !user.active);
    },
    user.active ? "small danger" : "small",
  );
  toggle.setAttribute("aria-label", (user.active ? "Deactivate " : "Reactivate ") + label);
  const role = A.button(
    user.role === "admin" ? "Make teacher" : "Make admin",
    function () {
      setRole(user, user.role === "admin" ? "teacher" : "admin");
    },
    "small",
  );
  role.setAttribute("aria-label", role.textContent + ": " + label);
  const link = A.button(
    "Set-password link",
    function () {
      newLink(user);
    },
    "small",
  );
  link.setAttribute("aria-label", "New set-password link for " + label);
  link.disabled = !user.active;
  box.append(toggle, role, link);
  return box;
}

function render() {
  tbody.replaceChildren.apply(
    tbody,
    people.map(function (u) {
      const tr = A.row(
        [
          u.email,
          u.display_name,
          u.role,
          u.active ? "yes" : "no (deactivated)",
          u.last_login_at ? CP.formatTime(u.last_login_at, true) : "never",
          u.sessions_owned,
          actions(u),
        ],
        true,
      );
      tr.dataset.email = u.email;
      return tr;
    }),
  );
}

async function load(message) {
  let result;
  try {
    result = await A.call("/api/admin/users");
  } catch (_err) {
    status.textContent = "Can't reach the server.";
    return;
  }
  if (!result) return;
  if (!result.ok) {
    status.textContent = CP.errorText(result, "Couldn't load the accounts (HTTP " + result.status + ").");
    return;
  }
  people = result.data;
  render();
  status.textContent = message || people.length + (people.length === 1 ? " account." : " accounts.");
}

async function patch(user, body, done) {
  const result = await A.call("/api/admin/users/" + user.id, { method: "PATCH", body: body });
  if (!result) return;
  if (!result.ok) {
    status.textContent = CP.errorText(result, "Couldn't change " + user.email + " (HTTP " + result.status + ").");
    return;
  }
  await load(done);
}

async function setActive(user, active) {
  if (!active) {
    const yes = await A.confirm({
      title: "Deactivate " + user.email + "?",
      body: [
        "The account can no longer log in. Every token it holds stops working at once and its open dashboards close.",
        "Its sessions and their data stay; you can reactivate the account later.",
      ],
      confirm: "Deactivate",
    });
    if (!yes) return;
  }
  await patch(
    user,
    { active: active },
    user.email + (active ? " reactivated." : " deactivated: its tokens no longer work."),
  );
}

async function setRole(user, role) {
  if (role === "admin") {
    const yes = await A.confirm({
      title: "Make " + user.email + " an admin?",
      body: ["Admins manage accounts, the privacy policy, exports, the audit log and erasure, and see every session."],
      confirm: "Make admin",
      danger: false,
    });
    if (!yes) return;
  }
  await patch(user, { role: role }, user.email + " is now " + (role === "admin" ? "an admin." : "a teacher."));
}

// A set-password link takes over the account: the admin enters their own password again
// (app/routes/admin.py). Not through A.call: its 403 is "wrong password" here, not "not an
// admin", and the dialog stays open to try again.
const reauth = document.getElementById("reauth-dialog");
const reauthForm = document.getElementById("reauth-form");
const reauthPassword = document.getElementById("reauth-password");
const reauthError = document.getElementById("reauth-error");
let reauthUser = null;

function newLink(user) {
  reauthUser = user;
  document.getElementById("reauth-for").textContent = user.email;
  reauthForm.reset();
  CP.setError(reauthError, "");
  reauth.showModal();
  reauthPassword.focus();
}

document.getElementById("reauth-cancel").addEventListener("click", function () {
  reauth.close();
});

reauth.addEventListener("close", function () {
  reauthPassword.value = ""; // never left in the page
});

reauthForm.addEventListener("submit", async function (event) {
  event.preventDefault();
  const user = reauthUser;
  if (!user) return;
  if (!reauthPassword.value) {
    CP.setError(reauthError, "Enter your password.");
    reauthPassword.focus();
    return;
  }
  const ok = document.getElementById("reauth-ok");
  ok.disabled = true;
  let result;
  try {
    result = await CP.api("/api/admin/users/" + user.id + "/password-link", {
      method: "POST",
      body: { current_password: reauthPassword.value },
    });
  } catch (_err) {
    CP.setError(reauthError, "Can't reach the server.");
    return;
  } finally {
    ok.disabled = false;
  }
  if (result.status === 401) {
    CP.toLogin();
    return;
  }
  if (!result.ok) {
    const fallback =
      result.status === 403 ? "Your password is wrong." : "Couldn't make a link (HTTP " + result.status + ").";
    CP.setError(reauthError, CP.errorText(result, fallback));
    reauthPassword.select();
    return;
  }
  reauth.close();
  showLink(user.email, result.data);
  status.textContent = "New set-password link for " + user.email + "; older links of the account no longer work.";
});

form.addEventListener("submit", async function (event) {
  event.preventDefault();
  const email = document.getElementById("add-email").value.trim();
  if (!email || email.indexOf("@") < 1) {
    CP.setError(addError, "Enter the person's email address.");
    document.getElementById("add-email").focus();
    return;
  }
  CP.setError(addError, "");
  const submit = document.getElementById("add-submit");
  submit.disabled = true;
  try {
    const result = await A.call("/api/admin/users", {
      method: "POST",
      body: {
        email: email,
        display_name: document.getElementById("add-name").value.trim(),
        role: document.getElementById("add-role").value,
      },
    });
    if (result && result.ok) {
      form.reset();
      await load(result.data.email + " added as " + result.data.role + ".");
      showLink(result.data.email, result.data.password_link);
    } else if (result) {
      CP.setError(addError, CP.errorText(result, "Couldn't add the account (HTTP " + result.status + ")."));
    }
  } catch (_err) {
    CP.setError(addError, "Can't reach the server.");
  } finally {
    submit.disabled = false;
  }
});

load();
