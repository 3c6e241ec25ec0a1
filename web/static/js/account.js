/* Your account (display name, password change) and the set-password page a one-time link
 * leads to (its token is in the URL's fragment, which browsers never send to the server). */
import * as CP from "./lib/all.js";

function passwordsProblem(first, second) {
  if (first.length < 10) return "The new password needs at least 10 characters.";
  if (first !== second) return "The two new passwords differ.";
  return "";
}

// --- the set-password page -------------------------------------------------------------
const setForm = document.getElementById("set-form");
if (setForm) {
  const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
  // Out of the address bar (and the history) at once: the link works once anyway.
  history.replaceState(null, "", location.pathname);
  const error = document.getElementById("set-error");
  if (!token) CP.setError(error, "This page needs the whole link the administrator gave you.");
  setForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    const first = document.getElementById("new-password").value;
    const problem = token
      ? passwordsProblem(first, document.getElementById("repeat-password").value)
      : "This page needs the whole link the administrator gave you.";
    if (problem) {
      CP.setError(error, problem);
      return;
    }
    CP.setError(error, "");
    const submit = document.getElementById("set-submit");
    submit.disabled = true;
    try {
      const result = await CP.api("/api/auth/set-password", {
        method: "POST",
        body: { token: token, new_password: first },
      });
      if (result.ok) {
        location.assign("/sessions");
        return;
      }
      CP.setError(error, CP.errorText(result, "Couldn't set the password (HTTP " + result.status + ")."));
    } catch (_err) {
      CP.setError(error, "Can't reach the server.");
    } finally {
      submit.disabled = false;
    }
  });
} else {
  accountPage();
}

// --- your account ------------------------------------------------------------------------
function accountPage() {
  const who = document.getElementById("account-who");
  const nameInput = document.getElementById("display-name");

  async function load() {
    const result = await CP.teacherApi("/api/auth/me");
    if (!result) return;
    if (!result.ok) {
      who.textContent = CP.errorText(result, "Couldn't load your account.");
      return;
    }
    who.textContent = "Logged in as " + result.data.email + " (" + result.data.role + ").";
    nameInput.value = result.data.display_name;
  }

  document.getElementById("name-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const error = document.getElementById("name-error");
    const done = document.getElementById("name-result");
    CP.setError(error, "");
    done.textContent = "";
    const result = await CP.teacherApi("/api/auth/me", {
      method: "PATCH",
      body: { display_name: nameInput.value.trim() },
    });
    if (!result) return;
    if (result.ok) {
      nameInput.value = result.data.display_name;
      done.textContent = 'Saved: students now see "Teacher: ' + result.data.display_name + '".';
    } else {
      CP.setError(error, CP.errorText(result, "Couldn't save the name (HTTP " + result.status + ")."));
    }
  });

  document.getElementById("password-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const error = document.getElementById("password-error");
    const done = document.getElementById("password-result");
    CP.setError(error, "");
    done.textContent = "";
    const current = document.getElementById("current-password").value;
    const first = document.getElementById("new-password").value;
    const problem = current
      ? passwordsProblem(first, document.getElementById("repeat-password").value)
      : "Enter your current password.";
    if (problem) {
      CP.setError(error, problem);
      return;
    }
    const result = await CP.api("/api/auth/password", {
      method: "POST",
      body: { current_password: current, new_password: first },
    });
    if (result.ok) {
      event.target.reset();
      done.textContent = "Password changed. You were logged out everywhere else.";
    } else if (result.status === 401) {
      CP.toLogin();
    } else {
      CP.setError(error, CP.errorText(result, "Couldn't change the password (HTTP " + result.status + ")."));
    }
  });

  load();
}
