"""FlashLM: ternary (1.58-bit) language models on a plain CPU, with an add/subtract-only engine.

    >>> import flashlm
    >>> model = flashlm.Model()            # the bundled small story model
    >>> print(model.generate("Once upon a time", max_tokens=40, seed=1))
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional

from . import _flashlm

__all__ = ["Model", "Tokenizer", "__version__"]
__version__ = _flashlm.__version__
Tokenizer = _flashlm.Tokenizer


class Model:
    """A FlashLM model: a ``.flm`` file (from ``flashlm-export``), or the bundled small model
    when ``path`` is None. ``kernel`` picks the ternary kernel (as ``flashlm-infer --kernel``);
    ``threads`` splits batched work (``logits``, prompts, ``eval_bpc``) across threads.

    Raises OSError when the file cannot be read, ValueError when it is not a valid model.
    """

    def __init__(self, path: Optional[str] = None, kernel: str = "auto", threads: int = 1):
        self._m = _flashlm.Model(None if path is None else str(path), kernel, threads)

    @classmethod
    def from_torch(cls, checkpoint: str, tokenizer: str, seq_len: int = 256, embedding: str = "f32",
                   kernel: str = "auto", threads: int = 1) -> "Model":
        """Pack an original PyTorch FlashLM v4 checkpoint (``.pt``/``.pth`` or
        ``.safetensors``) and its ``tokenizer.json`` in memory, through the same code as
        ``flashlm-export --torch``. ``seq_len`` is used when the checkpoint's config does not
        say; ``embedding`` is f32, f16, int8 or int4; ``kernel="exact"`` keeps f32 activations
        (PyTorch's logits within 1e-4)."""
        m = cls.__new__(cls)
        m._m = _flashlm.Model.from_torch(str(checkpoint), str(tokenizer), seq_len, embedding, kernel, threads)
        return m

    def generate(self, prompt: str, max_tokens: int = 200, temperature: float = 0.8, top_k: int = 50,
                 top_p: float = 1.0, seed: Optional[int] = None, stop: Optional[List[str]] = None,
                 ignore_eos: bool = False, *, min_p: float = 0.0, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, repetition_penalty: float = 1.0,
                 logit_bias: Optional[Dict[int, float]] = None) -> str:
        """Generate text after ``prompt`` and return it (without the prompt). The same seed
        gives the same text; ``seed=None`` means 42. Generation stops at the end-of-story
        token (unless ``ignore_eos``), at ``max_tokens``, or before the first ``stop`` string.
        ``min_p``, the penalties (OpenAI's presence and frequency, llama.cpp's repetition over
        the last 64 tokens) and ``logit_bias`` ({token id: -100..100}) are the CLI's flags.
        Runs without the GIL; Ctrl-C raises KeyboardInterrupt within about 20 ms. Bad
        arguments raise ValueError."""
        return self._m.stream(prompt, max_tokens, temperature, top_k, top_p, seed, stop, ignore_eos,
                              min_p, presence_penalty, frequency_penalty, repetition_penalty, logit_bias).read_all()

    def stream(self, prompt: str, max_tokens: int = 200, temperature: float = 0.8, top_k: int = 50,
               top_p: float = 1.0, seed: Optional[int] = None, stop: Optional[List[str]] = None,
               ignore_eos: bool = False, *, min_p: float = 0.0, presence_penalty: float = 0.0,
               frequency_penalty: float = 0.0, repetition_penalty: float = 1.0,
               logit_bias: Optional[Dict[int, float]] = None) -> Iterator[str]:
        """Like ``generate``, as an iterator of text pieces (never a broken character); the
        pieces join to ``generate``'s text."""
        return self._m.stream(prompt, max_tokens, temperature, top_k, top_p, seed, stop, ignore_eos,
                              min_p, presence_penalty, frequency_penalty, repetition_penalty, logit_bias)

    def logits(self, token_ids: List[int]):
        """Next-token logits for every position: a float32 numpy array of shape
        [len(token_ids), vocab_size] (needs numpy)."""
        import numpy as np

        raw = self._m._logits_bytes(list(token_ids))
        return np.frombuffer(raw, dtype="<f4").reshape(len(token_ids), self._m.vocab_size)

    def eval_bpc(self, path: str, protocol: str = "original", stories: int = 500, threads: int = 1) -> dict:
        """Validation bits per character over a story file (``.txt`` with ``<|endoftext|>``
        lines or ``.jsonl``, optionally ``.zst``): ``protocol`` "original" (FlashLM v4's
        eval, stories cut at 257 tokens), "exact" (every token) or "both". Returns a dict with
        bpc, loss, ppl, stories, tokens, chars, and cut (stories the original protocol cut);
        for "both", ``{"original": dict, "exact": dict}``. Negative counts raise ValueError.
        Ctrl-C raises KeyboardInterrupt within a few stories."""
        return self._m.eval_bpc(str(path), protocol, stories, threads)

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's vocabulary."""
        return self._m.tokenizer

    @property
    def vocab_size(self) -> int:
        return self._m.vocab_size

    @property
    def kernel(self) -> str:
        """The ternary kernel in use."""
        return self._m.kernel

    def __repr__(self) -> str:
        return repr(self._m)
