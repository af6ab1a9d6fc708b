"""The real CLIP BPE tokenizers (SD 1.x, and SDXL's two), built offline from the vocabulary file IMAGEN ships.

Single-file checkpoints carry no tokenizer. Every SD 1.x / SDXL text encoder was trained with OpenAI CLIP's
49408-token BPE, whose vocabulary ships in this package as `imagen/inference/vocab/bpe_simple_vocab_16e6.txt.gz`
(MIT, OpenAI; where it came from: `vocab/LICENSE-CLIP.txt`).
"""

from __future__ import annotations

import functools
import gzip
import threading
from importlib import resources
from typing import TYPE_CHECKING, Literal

from imagen.inference.spec import ModelLoadError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

ClipVariant = Literal["clip_l", "clip_g"]

VOCAB_SIZE = 49408
MODEL_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_VOCAB_PACKAGE = "imagen.inference.vocab"
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# SD 1.x and SDXL's first tokenizer pad with the end token; SDXL's tokenizer_2 (OpenCLIP bigG) pads with "!" (id 0).
_PAD_TOKEN: dict[str, str] = {"clip_l": EOS, "clip_g": "!"}

_lock = threading.Lock()


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's reversible byte -> printable character table (the first 256 vocabulary entries)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _read_bpe_file() -> str:
    try:
        with resources.files(_VOCAB_PACKAGE).joinpath(_VOCAB_FILE).open("rb") as raw, \
                gzip.open(raw, "rt", encoding="utf-8") as f:
            return f.read()
    except (OSError, EOFError, UnicodeDecodeError, ModuleNotFoundError) as exc:
        raise ModelLoadError(
            f"The CLIP tokenizer vocabulary {_VOCAB_PACKAGE}/{_VOCAB_FILE} is missing or damaged ({exc}); "
            "reinstall imagen.") from None


@functools.cache
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merge list exactly as OpenAI CLIP's simple_tokenizer builds them."""
    lines = _read_bpe_file().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += [BOS, EOS]
    if len(tokens) != VOCAB_SIZE or any(len(m) != 2 for m in merges):
        raise ModelLoadError(f"{_VOCAB_FILE} is not the CLIP BPE vocabulary it should be; reinstall imagen.")
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


_cache: dict[str, CLIPTokenizer] = {}


def clip_tokenizer(variant: ClipVariant) -> CLIPTokenizer:
    """The CLIP tokenizer for one text encoder: "clip_l" (SD 1.x, SDXL first) or "clip_g" (SDXL second).

    Built once per process (~0.5 s); later calls return the same object. Pipelines call it with the same
    padding/truncation settings every time, which the fast tokenizer keeps as backend state: callers that change
    those settings from several threads at once should build their own.
    """
    if variant not in _PAD_TOKEN:
        raise ValueError(f"unknown CLIP tokenizer variant {variant!r}; expected 'clip_l' or 'clip_g'")
    with _lock:
        tokenizer = _cache.get(variant)
        if tokenizer is None:
            from transformers import CLIPTokenizer

            vocab, merges = clip_vocab_and_merges()
            tokenizer = CLIPTokenizer(
                vocab=dict(vocab), merges=list(merges), unk_token=EOS, bos_token=BOS, eos_token=EOS,
                pad_token=_PAD_TOKEN[variant], model_max_length=MODEL_MAX_LENGTH)
            _cache[variant] = tokenizer
        return tokenizer
