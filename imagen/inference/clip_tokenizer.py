"""The real CLIP BPE tokenizers (SD 1.x, and SDXL's two), built offline from the vocabulary file in open-clip-torch.

Single-file checkpoints carry no tokenizer. Every SD 1.x / SDXL text encoder was trained with OpenAI CLIP's
49408-token BPE, which open-clip-torch ships as `open_clip/bpe_simple_vocab_16e6.txt.gz`. The file is read straight
from the installed distribution; open_clip itself is never imported (it pulls in torchvision and timm).
"""

from __future__ import annotations

import functools
import gzip
import threading
from importlib import metadata
from typing import TYPE_CHECKING, Literal

from imagen.inference.spec import ModelLoadError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

ClipVariant = Literal["clip_l", "clip_g"]

VOCAB_SIZE = 49408
MODEL_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_DISTRIBUTION = "open_clip_torch"
_VOCAB_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"
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
        dist = metadata.distribution(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ModelLoadError(
            "The CLIP tokenizer vocabulary is missing: install open-clip-torch (pip install open_clip_torch==3.3.0), "
            "which ships open_clip/bpe_simple_vocab_16e6.txt.gz.") from None
    entry = next((f for f in dist.files or () if str(f).replace("\\", "/") == _VOCAB_FILE), None)
    path = dist.locate_file(entry) if entry is not None else None
    if path is None or not path.is_file():  # type: ignore[union-attr]
        raise ModelLoadError(
            f"open-clip-torch is installed but {_VOCAB_FILE} is not in it; reinstall open-clip-torch "
            "(pip install --force-reinstall open_clip_torch==3.3.0).")
    with gzip.open(path, "rt", encoding="utf-8") as f:  # type: ignore[arg-type]
        return f.read()


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
        raise ModelLoadError(f"{_VOCAB_FILE} from open-clip-torch is not the CLIP BPE vocabulary it should be.")
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
