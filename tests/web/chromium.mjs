// What the browser tests share: one headless Chromium run, reading the dumped DOM, and the
// ok/FAIL lines. CHROMIUM overrides the browser's path (default Debian's /usr/bin/chromium).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const chromium = process.env.CHROMIUM ?? "/usr/bin/chromium";

// One headless Chromium run (as the machine's probe starts it: no sandbox as root, no GPU,
// no background networking on a closed network); virtual time lets the page's timers, its
// fetches and the whole generation finish before the DOM is dumped or the screenshot taken.
// Asynchronous: the calling process may also serve the page.
export async function chrome(url, extra, budgetMs = 120_000) {
  const profile = mkdtempSync(join(tmpdir(), "flashlm-chromium-"));
  try {
    const p = spawn(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", `--user-data-dir=${profile}`,
      `--virtual-time-budget=${budgetMs}`, "--run-all-compositor-stages-before-draw", ...extra, url],
      { stdio: ["ignore", "pipe", "pipe"], timeout: 300_000 });
    let out = "", err = "";
    p.stdout.on("data", (d) => { out += d; });
    p.stderr.on("data", (d) => { err += d; });
    const code = await new Promise((r, j) => { p.on("error", j); p.on("close", r); });
    if (code !== 0) throw new Error(`chromium exited ${code}: ${err.slice(-2000)}`);
    return out;
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

const entities = { amp: "&", lt: "<", gt: ">", quot: '"', "#39": "'", nbsp: "\u00a0" };
export const unescape = (s) => s.replace(/&(amp|lt|gt|quot|#39|nbsp);/g, (_, e) => entities[e]);
// The body's data-state attribute (idle, running, done, error).
export const state = (dom) => dom.match(/<body data-state="([a-z]+)"/)?.[1];

// ok/FAIL lines and their count.
export function checker() {
  const c = { failures: 0 };
  c.check = (ok, what) => {
    console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
    if (!ok) c.failures++;
  };
  return c;
}
