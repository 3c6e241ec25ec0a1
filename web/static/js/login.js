/* Login page: POST the credentials; the server sets the HttpOnly cookie; go on to the sessions. */
import * as CP from "./lib/all.js";

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
const submit = document.getElementById("login-submit");

/** Only paths on this origin are followed after login. The URL parser decides, as the
 * browser will when navigating: string checks miss "/\t/evil.example" (tabs and newlines
 * are dropped, making it "//evil.example") and backslashes read as slashes. */
function nextPath() {
  const next = new URLSearchParams(location.search).get("next");
  if (!next || !next.startsWith("/")) return "/sessions";
  let url;
  try {
    url = new URL(next, location.origin);
  } catch (_err) {
    return "/sessions";
  }
  if (url.origin !== location.origin) return "/sessions";
  return url.pathname + url.search + url.hash;
}

form.addEventListener("submit", async function (event) {
  event.preventDefault();
  const email = document.getElementById("email").value.trim();
  const password = document.getElementById("password").value;
  if (!email || !password) {
    CP.setError(error, "Enter your email and password.");
    return;
  }
  CP.setError(error, "");
  submit.disabled = true;
  try {
    const result = await CP.api("/api/auth/login", {
      method: "POST",
      body: { email: email, password: password },
    });
    if (result.ok) {
      location.assign(nextPath());
      return;
    }
    if (result.status === 401) {
      CP.setError(error, "Wrong email or password.");
    } else if (result.status === 429) {
      CP.setError(error, "Too many attempts. Wait a minute, then try again.");
    } else {
      CP.setError(error, CP.errorText(result, "Login failed (HTTP " + result.status + ")."));
    }
  } catch (_err) {
    CP.setError(error, "Can't reach the server. Check your connection and try again.");
  } finally {
    submit.disabled = false;
  }
});
