"""Prompt weighting: A1111's syntax, encoded with compel's weighted-embeddings machinery.

A1111 (what users paste from model pages): `(word:1.3)` weight 1.3, `(word)` x1.1, `[word]` /1.1, nesting multiplies,
`\\(` `\\)` `\\[` `\\]` literal brackets; a bracket without its partner is literal text. The prompt is parsed here into
(text, weight) fragments and handed to compel's `EmbeddingsProvider` directly, not rewritten into compel's own prompt
language: that language gives `+`, `-`, quotes and `.and()`/`.blend()` meanings A1111 prompts do not intend ("e-girl",
"++"), so a fragment list is the faithful translation. compel then scales each token's embedding away from the empty
prompt's (weights > 1) or blends toward the prompt without the fragment (weights < 1), and splits prompts longer than
75 tokens into 77-token chunks, so the positive and negative embeddings are padded to the same length here.

Unweighted text (every weight 1.0) is encoded exactly as compel encodes the plain string, so `a (cat:1.0)` and
`a cat` give the same embeddings, hence the same image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ROUND_WEIGHT = 1.1
_EXPLICIT_WEIGHT = re.compile(r":\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*$")

Fragment = tuple[str, float]


def parse_a1111(prompt: str) -> list[Fragment]:
    """A1111 attention syntax -> [(text, weight)], adjacent fragments of equal weight merged, empty ones dropped."""
    # 1. Characters, with escapes resolved: ("c", char) literal or ("(" / ")" / "[" / "]", bracket).
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(prompt):
        ch = prompt[i]
        if ch == "\\" and i + 1 < len(prompt) and prompt[i + 1] in "()[]\\":
            tokens.append(("c", prompt[i + 1]))
            i += 2
            continue
        tokens.append((ch, ch) if ch in "()[]" else ("c", ch))
        i += 1

    # 2. Pair brackets (round and square independently, innermost first); an unpaired one becomes literal text.
    pairs: list[tuple[int, int]] = []
    stacks: dict[str, list[int]] = {"(": [], "[": []}
    for idx, (kind, _) in enumerate(tokens):
        if kind in stacks:
            stacks[kind].append(idx)
        elif kind in (")", "]"):
            stack = stacks["(" if kind == ")" else "["]
            if stack:
                pairs.append((stack.pop(), idx))
            else:
                tokens[idx] = ("c", kind)
    for stack in stacks.values():
        for idx in stack:
            tokens[idx] = ("c", tokens[idx][1])

    # 3. Per-character multipliers; `(text:w)` sets w (its ":w" is removed), `(text)` 1.1, `[text]` 1/1.1.
    weights = [1.0] * len(tokens)
    dropped: set[int] = set()
    for start, end in pairs:
        if tokens[start][0] == "[":
            factor = 1 / ROUND_WEIGHT
        else:
            factor = ROUND_WEIGHT
            tail_start = end
            while tail_start > start + 1 and tokens[tail_start - 1][0] == "c":  # literal text right before ")"
                tail_start -= 1
            tail = "".join(tokens[k][1] for k in range(tail_start, end))
            match = _EXPLICIT_WEIGHT.search(tail)
            if match:
                try:
                    factor = float(match.group(1))
                    dropped.update(range(tail_start + match.start(), end))
                except ValueError:  # e.g. "1.2.3": A1111 keeps such text literally
                    pass
        for k in range(start + 1, end):
            weights[k] *= factor
        dropped.update((start, end))

    # 4. Group consecutive literal characters of equal weight.
    fragments: list[Fragment] = []
    for idx, (kind, ch) in enumerate(tokens):
        if idx in dropped or kind != "c":
            continue
        if fragments and fragments[-1][1] == weights[idx]:
            fragments[-1] = (fragments[-1][0] + ch, weights[idx])
        else:
            fragments.append((ch, weights[idx]))
    return [(text, weight) for text, weight in fragments if text.strip()] or [("", 1.0)]


def plain_text(fragments: list[Fragment]) -> str:
    return " ".join(text.strip() for text, _ in fragments if text.strip())


@dataclass
class PromptEmbeds:
    """What the Stable Diffusion pipelines accept instead of prompt strings (pooled ones for SDXL only)."""

    prompt_embeds: Any
    negative_prompt_embeds: Any
    pooled_prompt_embeds: Any = None
    negative_pooled_prompt_embeds: Any = None

    def kwargs(self, batch: int) -> dict[str, Any]:
        out = {"prompt_embeds": _repeat(self.prompt_embeds, batch),
               "negative_prompt_embeds": _repeat(self.negative_prompt_embeds, batch)}
        if self.pooled_prompt_embeds is not None:
            out["pooled_prompt_embeds"] = _repeat(self.pooled_prompt_embeds, batch)
            out["negative_pooled_prompt_embeds"] = _repeat(self.negative_pooled_prompt_embeds, batch)
        return out


def _repeat(t: Any, batch: int) -> Any:
    return t.repeat(batch, *([1] * (t.dim() - 1)))


def _providers(pipe: Any, sdxl: bool) -> list[Any]:
    """Fresh providers per job: compel caches the empty prompt's embedding, which a text-encoder LoRA changes."""
    from compel import ReturnedEmbeddingsType
    from compel.embeddings_provider import EmbeddingsProvider

    kind = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if sdxl
            else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if sdxl:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return [
        EmbeddingsProvider(tokenizer=tok, text_encoder=enc, truncate=False, returned_embeddings_type=kind,
                           device=str(enc.device))
        for tok, enc in pairs if tok is not None and enc is not None
    ]


def encode_prompts(pipe: Any, prompt: str, negative_prompt: str, *, sdxl: bool) -> PromptEmbeds:
    """Weighted embeddings for one prompt pair (batch 1). SDXL: both encoders' penultimate hidden states concatenated
    along the feature axis, the pooled embedding from the second encoder; an empty negative prompt gives zeros when the
    checkpoint asks for it (`force_zeros_for_empty_prompt`, as diffusers does when no negative prompt is given)."""
    import torch

    positive, negative = parse_a1111(prompt), parse_a1111(negative_prompt or "")
    providers = _providers(pipe, sdxl)
    with torch.inference_mode():
        per_encoder = [
            [
                provider.get_embeddings_for_weighted_prompt_fragments(
                    text_batch=[[t for t, _ in frags]], fragment_weights_batch=[[w for _, w in frags]],
                    device=provider.text_encoder.device)
                for frags in (positive, negative)
            ]
            for provider in providers
        ]
        # A prompt past 75 tokens is encoded in 77-token chunks: pad every tensor to the longest with the empty
        # prompt's embedding, chunk by chunk (what compel's pad_conditioning_tensors_to_same_length does).
        length = max(c.shape[1] for pair in per_encoder for c in pair)
        for provider, pair in zip(providers, per_encoder, strict=True):
            for i, c in enumerate(pair):
                while c.shape[1] < length:
                    c = torch.cat([c, provider.empty_z.to(c.device, c.dtype)], dim=1)
                pair[i] = c
        prompt_embeds = torch.cat([pair[0] for pair in per_encoder], dim=-1)
        negative_embeds = torch.cat([pair[1] for pair in per_encoder], dim=-1)
        if not sdxl:
            return PromptEmbeds(prompt_embeds, negative_embeds)
        last = providers[-1]
        pooled = last.get_pooled_embeddings([plain_text(positive)], device=last.text_encoder.device)
        negative_pooled = last.get_pooled_embeddings([plain_text(negative)], device=last.text_encoder.device)
        if not (negative_prompt or "").strip() and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
            negative_embeds = torch.zeros_like(negative_embeds)
            negative_pooled = torch.zeros_like(negative_pooled)
        dtype = pipe.text_encoder_2.dtype
        return PromptEmbeds(prompt_embeds, negative_embeds, pooled.to(dtype), negative_pooled.to(dtype))
