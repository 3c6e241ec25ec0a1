// Runs one of the pages' classic scripts in a bare context (no DOM) and returns its window, so
// the pure functions they expose can be tested without a browser.
import { readFileSync } from "node:fs";
import vm from "node:vm";

export function loadScript(relPath, extra) {
  const source = readFileSync(new URL("../static/js/" + relPath, import.meta.url), "utf8");
  const window = {
    location: { protocol: "https:", host: "class.example:8443", pathname: "/", search: "" },
    addEventListener() {},
  };
  const context = vm.createContext(
    Object.assign(
      {
        window: window,
        document: { getElementById: () => null },
        location: window.location,
        setInterval: () => 0,
        clearInterval() {},
        setTimeout,
        clearTimeout,
        Math,
        Date,
        CompressionStream,
        Response,
        Blob,
      },
      extra || {},
    ),
  );
  vm.runInContext(source, context, { filename: relPath });
  return window;
}
