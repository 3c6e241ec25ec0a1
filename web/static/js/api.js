/* Loaded by every page (base.html) as a module: the logout button in the header. The helpers
 * pages share live in lib/ (http, socket, wording, dom; all.js for all of them). */

import { api } from "./lib/http.js";

const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("click", async () => {
    try {
      await api("/api/auth/logout", { method: "POST" });
    } finally {
      location.assign("/login");
    }
  });
}
