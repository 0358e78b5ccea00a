"""The flashlm Python package against the engine (scripts/test-python.sh runs it): bundled
model, determinism, streaming, logits equal to the engine's, evaluation, errors, two threads
at once."""
import subprocess
import json
import threading
from pathlib import Path

import numpy as np
import pytest

import flashlm

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests/fixtures/stories/tiny.txt"


@pytest.fixture(scope="module")
def model():
    return flashlm.Model()


def test_bundled_model_generates_deterministic_text(model):
    a = model.generate("Once upon a time", max_tokens=40, seed=3)
    b = model.generate("Once upon a time", max_tokens=40, seed=3)
    c = model.generate("Once upon a time", max_tokens=40, seed=4)
    assert a == b and len(a) > 20
    assert a != c


def test_generate_matches_the_cli():
    cli = ROOT / "target/release/flashlm-infer"
    if not cli.exists():
        pytest.skip(f"{cli} is not built (cargo build --release -p flashlm-infer)")
    out = subprocess.run([str(cli), "--prompt", "Once upon a time", "--seed", "5", "--max-tokens", "50"],
                         capture_output=True, text=True, check=True).stdout
    text = flashlm.Model().generate("Once upon a time", max_tokens=50, seed=5)
    assert out == "Once upon a time" + text + "\n"


def test_sampling_fields_match_the_cli():
    cli = ROOT / "target/release/flashlm-infer"
    if not cli.exists():
        pytest.skip(f"{cli} is not built (cargo build --release -p flashlm-infer)")
    m = flashlm.Model()
    dog = m.tokenizer.encode(" dog")[0]
    flags = ["--min-p", "0.05", "--presence-penalty", "0.5", "--frequency-penalty", "0.3",
             "--repetition-penalty", "1.2", "--logit-bias", f"{dog}=4"]
    out = subprocess.run([str(cli), "--prompt", "Once upon a time", "--seed", "5", "--max-tokens", "50", *flags],
                         capture_output=True, text=True, check=True).stdout
    text = m.generate("Once upon a time", max_tokens=50, seed=5, min_p=0.05, presence_penalty=0.5,
                      frequency_penalty=0.3, repetition_penalty=1.2, logit_bias={dog: 4.0})
    assert out == "Once upon a time" + text + "\n"
    assert text != m.generate("Once upon a time", max_tokens=50, seed=5)
    for bad in [dict(logit_bias={10_000: 1.0}), dict(logit_bias={-1: 1.0}), dict(logit_bias={5: 101.0}),
                dict(presence_penalty=2.5), dict(repetition_penalty=0.0), dict(min_p=1.5)]:
        with pytest.raises(ValueError):
            m.generate("Once upon a time", max_tokens=5, **bad)


def test_stream_pieces_join_to_generate(model):
    pieces = list(model.stream("The little dog", max_tokens=60, seed=9))
    assert len(pieces) > 5 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == model.generate("The little dog", max_tokens=60, seed=9)


def test_stop_strings_cut_the_text(model):
    full = model.generate("Once upon a time", max_tokens=80, seed=2, ignore_eos=True)
    stop = full[len(full) // 2: len(full) // 2 + 4]
    cut = model.generate("Once upon a time", max_tokens=80, seed=2, ignore_eos=True, stop=[stop])
    assert cut == full[: full.index(stop)]


def test_logits_are_the_engines(model):
    ids = model.tokenizer.encode("Once upon a time there was a cat")
    logits = model.logits(ids)
    assert logits.dtype == np.float32 and logits.shape == (len(ids), model.vocab_size)
    # Prefixes give the same rows (the engine is causal and batched bit for bit).
    np.testing.assert_array_equal(model.logits(ids[:3]), logits[:3])
    # Greedy generation follows the argmax of the last row.
    greedy = model.generate("Once upon a time there was a cat", max_tokens=1, temperature=0.0, ignore_eos=True)
    assert greedy == model.tokenizer.decode([int(np.argmax(logits[-1]))])


def test_logits_score_a_story_as_the_cli_eval_does(model):
    """The exact protocol from numpy over model.logits equals `flashlm-infer eval --json`."""
    cli = ROOT / "target/release/flashlm-infer"
    if not cli.exists():
        pytest.skip(f"{cli} is not built (cargo build --release -p flashlm-infer)")
    out = subprocess.run([str(cli), "eval", "--data", str(FIXTURE), "--stories", "1", "--protocol", "exact", "--json"],
                         capture_output=True, text=True, check=True).stdout
    want = json.loads(out)
    story = FIXTURE.read_text().split("<|endoftext|>")[0].strip()
    ids = model.tokenizer.encode(story)
    eos = 3
    logits = model.logits([eos] + ids).astype(np.float64)
    targets = ids + [eos]
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(len(targets)), targets].sum()
    assert want["tokens"] == len(targets)
    assert abs(nll / len(targets) - want["loss"]) < 1e-5, (nll / len(targets), want["loss"])


def test_eval_bpc_on_a_fixture(model):
    r = model.eval_bpc(str(FIXTURE), protocol="exact", stories=6)
    assert set(r) == {"bpc", "loss", "ppl", "stories", "tokens", "chars", "cut"}
    assert r["cut"] == 0, "the exact protocol cuts nothing"
    assert r["stories"] == 6 and 0.5 < r["bpc"] < 5
    assert model.eval_bpc(str(FIXTURE), protocol="exact", stories=6) == r
    # "both", as the CLI takes it: the two protocols' dicts.
    both = model.eval_bpc(str(FIXTURE), protocol="both", stories=6)
    assert both == {"original": model.eval_bpc(str(FIXTURE), protocol="original", stories=6), "exact": r}


def test_tokenizer_round_trip(model):
    tok = model.tokenizer
    ids = tok.encode("Tom and Lily played in the park.")
    assert tok.decode(ids) == "Tom and Lily played in the park."
    assert tok.vocab_size == model.vocab_size == 10000


def test_bad_arguments_raise(model):
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate("hi", max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate("hi", top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate("hi", temperature=-1.0)
    with pytest.raises(ValueError, match="empty"):
        model.generate("   ")
    with pytest.raises(ValueError, match="protocol"):
        model.eval_bpc(str(FIXTURE), protocol="nope")
    with pytest.raises(ValueError, match="vocabulary"):
        model.logits([1, 99999])
    with pytest.raises(ValueError, match="kernel"):
        flashlm.Model(kernel="nope")
    with pytest.raises(OSError, match="missing.flm"):
        flashlm.Model("/nonexistent/missing.flm")
    with pytest.raises(OSError):
        model.eval_bpc("/nonexistent/stories.txt")
    with pytest.raises(ValueError):
        flashlm.Model(str(FIXTURE))  # a text file is not a model
    with pytest.raises(TypeError):
        model.generate(5)
    # Negative counts are ValueErrors naming the argument, not OverflowErrors.
    for call, name in [(lambda: model.generate("hi", max_tokens=-1), "max_tokens"),
                       (lambda: model.generate("hi", top_k=-5), "top_k"),
                       (lambda: model.generate("hi", seed=-1), "seed"),
                       (lambda: model.generate("hi", seed=2**70), "seed"),
                       (lambda: model.eval_bpc(str(FIXTURE), stories=-1), "stories"),
                       (lambda: model.eval_bpc(str(FIXTURE), threads=-2), "threads"),
                       (lambda: flashlm.Model(threads=-1), "threads")]:
        with pytest.raises(ValueError, match=name):
            call()


def test_two_threads_at_once(model):
    want = model.generate("One day", max_tokens=100, seed=11, ignore_eos=True)
    got = [None, None]

    def run(i):
        got[i] = model.generate("One day", max_tokens=100, seed=11, ignore_eos=True)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [want, want]


def read_safetensors(path):
    """name -> float32 array, from the format's own layout (8-byte length, JSON, data)."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, m in meta.items():
        if name == "__metadata__":
            continue
        a, b = m["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(m["shape"])
    return out


@pytest.mark.parametrize("name", ["tiny.pt", "tiny-state-dict.pt", "tiny.safetensors"])
def test_from_torch_gives_pytorchs_logits(name):
    torch_dir = ROOT / "tests/fixtures/torch"
    batch = json.loads((ROOT / "tests/fixtures/parity/batch.json").read_text())
    t = batch["config"]["seq_len"]
    tokens = batch["tokens"][:t]
    expected = read_safetensors(ROOT / "tests/fixtures/parity/expected.safetensors")["logits"]
    expected = expected.reshape(batch["batch"], t, -1)[0]
    m = flashlm.Model.from_torch(str(torch_dir / name), str(torch_dir / "tokenizer.json"), seq_len=16, kernel="exact")
    ours = m.logits(tokens)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-4


def test_from_torch_refuses_bad_files():
    torch_dir = ROOT / "tests/fixtures/torch"
    with pytest.raises(OSError, match="missing.pt"):
        flashlm.Model.from_torch("/nonexistent/missing.pt", str(torch_dir / "tokenizer.json"))
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        flashlm.Model.from_torch(str(torch_dir / "tokenizer.json"), str(torch_dir / "tokenizer.json"))
    with pytest.raises(ValueError, match="embedding"):
        flashlm.Model.from_torch(str(torch_dir / "tiny.pt"), str(torch_dir / "tokenizer.json"), embedding="int2")


def _child(code, limit_as=None):
    """Run `code` in a fresh interpreter (SIGINT raising KeyboardInterrupt, as in a terminal)."""
    import sys
    pre = "import signal, resource, sys, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
    if limit_as:
        pre += f"resource.setrlimit(resource.RLIMIT_AS, ({limit_as}, {limit_as}))\n"
    return subprocess.Popen([sys.executable, "-c", pre + code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_logits_too_large_for_memory_raise_memoryerror_not_abort():
    # 60,000 tokens x 10,000 logits x 4 bytes = 2.4 GB, twice: more than a 4 GB address space.
    p = _child(
        "import flashlm\nm = flashlm.Model()\n"
        "try:\n    m.logits([5] * 60000)\n    print('no error')\n"
        "except MemoryError as e:\n    print('MemoryError:', e)\n"
        "print('alive', m.generate('Once', max_tokens=3, seed=1) is not None)\n",
        limit_as=4 << 30)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, (p.returncode, err)
    assert "MemoryError:" in out and "alive True" in out, (out, err)


@pytest.mark.parametrize("call", [
    "m.generate('Once upon a time', max_tokens=10**9, ignore_eos=True)",
    "m.eval_bpc(DATA, protocol='exact', stories=100000)",
])
def test_ctrl_c_interrupts_long_calls_quickly(call):
    import os
    import signal
    import time
    data = Path(os.environ.get("FLASHLM_DATA_DIR", ROOT.parent / "shared/data")) / "tinystories-valid.txt.zst"
    if "eval_bpc" in call and not data.exists():
        pytest.skip(f"{data} not found (set FLASHLM_DATA_DIR)")
    p = _child(
        f"import flashlm\nDATA = {str(data)!r}\nm = flashlm.Model()\nprint('ready', flush=True)\n"
        f"try:\n    {call}\n    print('finished', flush=True)\n"
        "except KeyboardInterrupt:\n    print('interrupted', time.monotonic(), flush=True)\n")
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (p.returncode, err)
    words = out.split()
    assert words[0] == "interrupted", (out, err)
    # Within a slice (about 20 ms) in a quiet process; 1 s leaves room for a loaded machine.
    assert float(words[1]) - sent < 1.0, f"KeyboardInterrupt {float(words[1]) - sent:.3f} s after SIGINT"
