/* Loaded by every page (base.html) as a module: the logout button in the header. The helpers
 * themselves live in lib/ (http, socket, wording, dom), which page modules import; they are
 * also offered as window.ClassPulse for the pages that don't import them yet. */

import * as dom from "./lib/dom.js";
import * as http from "./lib/http.js";
import * as socket from "./lib/socket.js";
import * as wording from "./lib/wording.js";

window.ClassPulse = Object.assign({}, http, socket, wording, dom);

const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("click", async () => {
    try {
      await http.api("/api/auth/logout", { method: "POST" });
    } finally {
      location.assign("/login");
    }
  });
}
