/* Every shared helper under one name, for pages that call them as CP.api(...), CP.show(...). */

export * from "./charts.js";
export * from "./dom.js";
export * from "./http.js";
export * from "./socket.js";
export * from "./wording.js";
