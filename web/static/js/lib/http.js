/* Calls to the JSON API on this origin, and what every page does with a 401. */

const CSRF_HEADER = "X-ClassPulse-CSRF";

/** Call the JSON API on this origin. Non-GET requests carry the CSRF header that the
 * gateway requires for cookie-authenticated calls. Resolves to {ok, status, data}; never
 * throws for HTTP errors (network failures reject). */
export async function api(path, options) {
  const opts = options || {};
  const method = (opts.method || "GET").toUpperCase();
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    headers[CSRF_HEADER] = "1";
    headers["Content-Type"] = "application/json";
  }
  if (opts.token) headers.Authorization = "Bearer " + opts.token;
  const response = await fetch(path, {
    method: method,
    headers: headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    credentials: "same-origin",
    cache: "no-store",
  });
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  return { ok: response.ok, status: response.status, data: data };
}

/** Send the browser to the login page, coming back here afterwards. */
export function toLogin() {
  const next = location.pathname + location.search;
  location.assign("/login?next=" + encodeURIComponent(next));
}

/** A teacher API call: a 401 goes to the login page (resolves to null in that case). */
export async function teacherApi(path, options) {
  const result = await api(path, options);
  if (result.status === 401) {
    toLogin();
    return null;
  }
  return result;
}

/** The error text the API gave (FastAPI's {"detail": ...}), or a fallback. */
export function errorText(result, fallback) {
  const detail = result?.data?.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length && detail[0].msg) return detail[0].msg;
  return fallback;
}
