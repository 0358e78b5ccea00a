// The browser test of flashlm-serve's playground page (GET /): this script starts the
// server on 127.0.0.1 (any free port), headless Chromium (Debian's `chromium`) opens the page
// with a prompt, sampling and a seed (autorun), the page streams the story from
// /v1/completions, and the text it shows must equal the API's text for the same request;
// every token must carry its probability (the colour and the hover text). A screenshot is
// saved when a path is given.
// usage: node tests/web/playground-test.mjs FLASHLM_SERVE [SCREENSHOT.png]
// CHROMIUM overrides the browser's path.
import { spawn } from "node:child_process";
import { statSync } from "node:fs";
import { resolve } from "node:path";

import { checker, chrome, state, unescape } from "./chromium.mjs";

const serve = process.argv[2];
const screenshot = process.argv[3];
if (!serve) {
  console.error("usage: node tests/web/playground-test.mjs FLASHLM_SERVE [SCREENSHOT.png]");
  process.exit(2);
}

// The server, on a port it picks (its log line names it).
const server = spawn(serve, ["--port", "0"], { stdio: ["ignore", "ignore", "pipe"] });
const base = await new Promise((ok, fail) => {
  let log = "";
  const t = setTimeout(() => fail(new Error(`the server did not start: ${log}`)), 30_000);
  server.stderr.on("data", (d) => {
    log += d;
    const m = log.match(/http:\/\/127\.0\.0\.1:\d+/);
    if (m) { clearTimeout(t); ok(m[0]); }
  });
  server.on("exit", (c) => fail(new Error(`the server exited ${c}: ${log}`)));
});


// The story's token spans: [{text, style, title}].
function spans(dom) {
  const out = dom.match(/<span id="out">((?:<span[^>]*>[^<]*<\/span>)*)<\/span>/);
  if (!out) return null;
  return [...out[1].matchAll(/<span([^>]*)>([^<]*)<\/span>/g)].map(([, attrs, text]) => ({
    text: unescape(text),
    style: attrs.match(/style="([^"]*)"/)?.[1] ?? "",
    title: unescape(attrs.match(/title="([^"]*)"/)?.[1] ?? ""),
  }));
}
const element = (dom, id) => dom.match(new RegExp(`<[a-z]+ id="${id}"[^>]*>([^<]*)</`))?.[1] ?? "";

const results = checker();
const check = results.check;

const cases = [
  { prompt: "Once upon a time", seed: 7, max_tokens: 120, temperature: 0.8, top_k: 50 },
  { prompt: "The little dog", seed: 1, max_tokens: 60, temperature: 0, top_k: 0 },
];
try {
  for (const c of cases) {
    const r = await fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(c) });
    const want = (await r.json()).choices[0].text;
    const q = new URLSearchParams({ autorun: "1", ...Object.fromEntries(Object.entries(c).map(([k, v]) => [k, String(v)])) });
    const dom = await chrome(`${base}/?${q}`, ["--dump-dom"], 60_000);
    const s = spans(dom) ?? [];
    const got = s.map((x) => x.text).join("");
    check(state(dom) === "done", `page finished (seed ${c.seed}): state ${state(dom)}, ${element(dom, "stats")}`);
    check(got === want && got.length > 50, `text shown equals the API's (seed ${c.seed}, ${got.length} chars)`);
    if (got !== want) console.log(`  page: ${JSON.stringify(got.slice(0, 300))}\n  api:  ${JSON.stringify(want.slice(0, 300))}`);
    check(s.length > 10 && s.every((x) => /background/.test(x.style) && /%/.test(x.title)),
      `every piece (${s.length}) is coloured by its probability and names it on hover`);
  }
  if (screenshot) {
    const q = new URLSearchParams({ autorun: "1", prompt: "Once upon a time", seed: "7", max_tokens: "160" });
    await chrome(`${base}/?${q}`, [`--screenshot=${resolve(screenshot)}`, "--window-size=1000,760", "--hide-scrollbars"]);
    check(statSync(screenshot).size > 10_000, `screenshot saved to ${screenshot}`);
  }
} catch (e) {
  console.error(`playground test: ${e.message}`);
  results.failures++;
} finally {
  server.kill("SIGTERM");
}
console.log(results.failures ? `playground test: ${results.failures} failed` : "playground test: all passed");
process.exit(results.failures ? 1 : 0);
