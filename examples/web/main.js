// FlashLM in the browser: loads the wasm-bindgen build of bindings/wasm (the SIMD128 one
// where the browser runs SIMD, else the plain one), fetches a .flm as bytes, and writes a
// story token by token, yielding to the browser so that text appears as it is generated.
// URL parameters: model=URL (default: the bundled model), simd=0 (force the plain build),
// and autorun=1 with prompt, seed, max_tokens, temperature, top_k (what the browser test uses).

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const DEFAULT_MODEL = "../../models/flashlm-small.flm";

// (module (func (result v128) i32.const 0 i8x16.splat i8x16.popcnt)): valid only where
// WebAssembly SIMD128 is supported.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0,
  65, 0, 253, 15, 253, 98, 11]);

let wasm = null;   // the loaded bindings module
let model = null;  // a wasm Model
let running = null; // the Stream being generated

function showError(message) {
  const e = $("error");
  e.textContent = message;
  e.hidden = false;
  document.body.dataset.state = "error";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// Every failure ends up on the page as a sentence, not only in the console.
window.addEventListener("error", (ev) => showError(`Error: ${ev.message}`));
window.addEventListener("unhandledrejection", (ev) => showError(`Error: ${ev.reason?.message ?? ev.reason}`));

async function loadEngine() {
  const simd = params.get("simd") !== "0" && WebAssembly.validate(SIMD_PROBE);
  const dir = simd ? "./pkg-simd" : "./pkg-nosimd";
  try {
    wasm = await import(`${dir}/flashlm_wasm.js`);
    await wasm.default();
  } catch (e) {
    throw new Error(`could not load the engine from ${dir}/ (run scripts/build-web.sh): ${e.message}`);
  }
}

function useModel(bytes, name) {
  let m;
  try {
    m = new wasm.Model(bytes);
  } catch (e) {
    throw new Error(`${name} could not be loaded: ${e.message ?? e}`);
  }
  model?.free();
  model = m;
  const c = JSON.parse(model.config);
  $("model-info").textContent = `${name}: d=${c.dim}, ${c.n_blocks} blocks, vocabulary ${c.vocab_size}, ` +
    `${(bytes.length / 1e6).toFixed(2)} MB; kernel ${model.kernel}, head ${model.head}, one thread`;
  $("generate").disabled = false;
  document.body.dataset.state = "ready";
}

async function fetchModel(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`could not fetch the model ${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

function field(id, fallback) {
  const v = Number($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

async function generate() {
  clearError();
  const prompt = $("prompt").value;
  $("prompt-text").textContent = prompt;
  $("generated").textContent = "";
  $("stats").textContent = "";
  let s;
  try {
    s = model.stream(prompt, field("max-tokens", 200), field("temperature", 0.8), field("top-k", 50), 1.0,
      field("seed", 42) >>> 0);
  } catch (e) {
    showError(`Cannot generate: ${e.message ?? e}`);
    return;
  }
  running = s;
  document.body.dataset.state = "generating";
  $("generate").disabled = true;
  $("stop").disabled = false;
  const out = $("generated");
  const t0 = performance.now();
  let lastYield = t0;
  try {
    for (;;) {
      const piece = s.next();
      if (piece === undefined) break;
      if (piece) out.append(piece);
      const now = performance.now();
      if (now - lastYield > 30) { // let the browser paint the new text
        $("stats").textContent = `${s.tokens} tokens, ${(s.tokens / ((now - t0) / 1000)).toFixed(0)} tok/s`;
        await new Promise((r) => setTimeout(r, 0));
        lastYield = performance.now();
      }
    }
  } catch (e) {
    showError(`Generation stopped: ${e.message ?? e}`);
  }
  const secs = (performance.now() - t0) / 1000;
  // (A headless browser on virtual time reports no time at all for the generation.)
  const speed = secs > 0 ? `in ${secs.toFixed(2)} s: ${(s.tokens / secs).toFixed(0)} tok/s` : "(no clock: virtual time)";
  $("stats").textContent = `${s.tokens} tokens ${speed} ` +
    `(prompt ${s.prompt_tokens} tokens, finish: ${s.finish_reason ?? "stopped"}; kernel ${model.kernel}, one thread)`;
  $("stats").dataset.tokens = s.tokens;
  if (secs > 0) $("stats").dataset.tokPerS = (s.tokens / secs).toFixed(1);
  s.free();
  running = null;
  $("generate").disabled = false;
  $("stop").disabled = true;
  if (document.body.dataset.state !== "error") document.body.dataset.state = "done";
}

$("controls").addEventListener("submit", (ev) => { ev.preventDefault(); generate(); });
$("stop").addEventListener("click", () => { if (running) running.cut(); });
$("model-file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0];
  if (!f) return;
  clearError();
  try {
    useModel(new Uint8Array(await f.arrayBuffer()), f.name);
  } catch (e) {
    showError(e.message);
  }
});

async function main() {
  try {
    await loadEngine();
    const url = params.get("model") ?? DEFAULT_MODEL;
    useModel(await fetchModel(url), url.split("/").pop());
  } catch (e) {
    showError(e.message);
    return;
  }
  if (params.get("autorun") === "1") {
    for (const [p, id] of [["prompt", "prompt"], ["seed", "seed"], ["max_tokens", "max-tokens"],
      ["temperature", "temperature"], ["top_k", "top-k"]]) {
      if (params.has(p)) $(id).value = params.get(p);
    }
    await generate();
  }
}

main();
