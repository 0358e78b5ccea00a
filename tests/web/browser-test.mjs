// The browser test of examples/web: headless Chromium (Debian's `chromium`) loads the page from
// a static server this script starts on 127.0.0.1, the page writes a story with a seed
// (autorun), and the text read back from the DOM must equal what the native engine
// (`flashlm-infer`) writes for the same prompt, seed and sampling. Both wasm builds (SIMD128
// and plain) are checked, a file that is not a model must show a readable error on the page,
// and a screenshot is saved.
// usage: node tests/web/browser-test.mjs NATIVE_FLASHLM_INFER [SCREENSHOT.png]
// Needs scripts/build-web.sh first. CHROMIUM overrides the browser's path.
import { spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { readFileSync, statSync } from "node:fs";
import { extname, join, normalize, resolve } from "node:path";

import { checker, chrome, state, unescape } from "./chromium.mjs";

const root = resolve(new URL("../..", import.meta.url).pathname);
const native = process.argv[2];
const screenshot = process.argv[3];
if (!native) {
  console.error("usage: node tests/web/browser-test.mjs NATIVE_FLASHLM_INFER [SCREENSHOT.png]");
  process.exit(2);
}
const MIME = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm",
  ".flm": "application/octet-stream", ".json": "application/json" };

// A static server for the repository root (GET only, no paths outside it).
const server = createServer((req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
  const file = join(root, path);
  if (!file.startsWith(root + "/") || req.method !== "GET") {
    res.writeHead(403).end();
    return;
  }
  try {
    const served = statSync(file).isDirectory() ? join(file, "index.html") : file;
    const body = readFileSync(served);
    res.writeHead(200, { "content-type": MIME[extname(served)] ?? "application/octet-stream" }).end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}`;

function element(dom, id) {
  const m = dom.match(new RegExp(`<[a-z]+ id="${id}"[^>]*>([\\s\\S]*?)</`));
  return m ? unescape(m[1]) : null;
}

const results = checker();
const check = results.check;

const cases = [
  { prompt: "Once upon a time", seed: 7, max_tokens: 120, temperature: 0.8, top_k: 50 },
  { prompt: "The little dog", seed: 1, max_tokens: 80, temperature: 0, top_k: 0 },
];
try {
  for (const c of cases) {
    const n = spawnSync(native, ["--prompt", c.prompt, "--seed", String(c.seed), "--max-tokens", String(c.max_tokens),
      "--temperature", String(c.temperature), "--top-k", String(c.top_k)], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    if (n.status !== 0) throw new Error(`${native} failed: ${n.stderr}`);
    const want = n.stdout.replace(/\n$/, "");
    // FLASHLM_WEB_BUILDS=1: the SIMD128 build only (CI builds no other).
    for (const simd of (process.env.FLASHLM_WEB_BUILDS ?? "1,0").split(",")) {
      const q = new URLSearchParams({ autorun: "1", simd, ...Object.fromEntries(Object.entries(c).map(([k, v]) => [k, String(v)])) });
      const dom = await chrome(`${base}/examples/web/?${q}`, ["--dump-dom"]);
      const got = (element(dom, "prompt-text") ?? "") + (element(dom, "generated") ?? "");
      const stats = element(dom, "stats") ?? "";
      check(state(dom) === "done", `page finished (simd=${simd}, seed ${c.seed}): state ${state(dom)}, ${stats}`);
      check(got === want, `text equals the native engine's (simd=${simd}, seed ${c.seed}, ${got.length} chars)`);
      if (got !== want) console.log(`  page:   ${JSON.stringify(got.slice(0, 300))}\n  native: ${JSON.stringify(want.slice(0, 300))}`);
    }
  }
  // A file that is not a model: a readable error on the page.
  const dom = await chrome(`${base}/examples/web/?model=${encodeURIComponent("/examples/web/index.html")}`, ["--dump-dom"]);
  const err = element(dom, "error") ?? "";
  check(state(dom) === "error" && /could not be loaded: not a FlashLM model/.test(err), `bad model file shows: ${JSON.stringify(err)}`);
  if (screenshot) {
    const q = new URLSearchParams({ autorun: "1", prompt: "Once upon a time", seed: "7", max_tokens: "120" });
    await chrome(`${base}/examples/web/?${q}`, [`--screenshot=${resolve(screenshot)}`, "--window-size=1000,820", "--hide-scrollbars"]);
    check(statSync(screenshot).size > 10_000, `screenshot saved to ${screenshot}`);
  }
} catch (e) {
  console.error(`browser test: ${e.message}`);
  results.failures++;
} finally {
  server.close();
}
console.log(results.failures ? `browser test: ${results.failures} failed` : "browser test: all passed");
process.exit(results.failures ? 1 : 0);
