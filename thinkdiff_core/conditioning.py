"""Aligned features merged into a ComfyUI-style FLUX conditioning.

A conditioning is a list of `[cond, extras]` pairs: `cond` is `[B, L, 4096]` T5-encoder output and
`extras` carries `pooled_output` (CLIP-L, `[B, 768]`), `guidance` and whatever else other nodes put
there. ThinkDiff only rewrites `cond`:

- `replace`: the aligned features are the whole prompt (the reference ThinkDiff-LVLM recipe; give
  the base from an empty prompt so its pooled vector is CLIP-L of "").
- `prepend`: `[aligned, base tokens]` (the ThinkDiff-CLIP recipe: images before the prompt).
- `append`: `[base tokens, aligned]`.

Every other entry of `extras` is kept; inputs are never modified in place (ComfyUI caches them).
"""

from __future__ import annotations

from typing import Any

import torch

from .aligner import T5_HIDDEN_SIZE

MODES = ("replace", "prepend", "append")

Conditioning = list[list[Any]]


def _broadcast(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(
        f"Cannot combine a batch of {tensor.shape[0]} {what} with a batch of {batch}: use batch 1 on one side "
        f"or the same batch size on both."
    )


def merge_conditioning(base: Conditioning, aligned: torch.Tensor, mode: str = "replace") -> Conditioning:
    """Put `aligned` `[B, T, D]` into every `[cond, extras]` of `base` by `mode`; return a new conditioning."""
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose one of {MODES}.")
    if not base:
        raise ValueError("The base conditioning is empty; connect the output of a FLUX text encode node.")
    merged = []
    for cond, extras in base:
        if cond.shape[-1] != aligned.shape[-1] and cond.shape[-1] == T5_HIDDEN_SIZE:
            raise ValueError(
                f"The aligner writes {aligned.shape[-1]}-wide features but the base conditioning is T5-XXL "
                f"({T5_HIDDEN_SIZE} wide, shape {tuple(cond.shape)}): this aligner was not trained for T5-XXL models. "
                f"Load an aligner with output size {T5_HIDDEN_SIZE} (the official thinkdiff_lvlm.pth / thinkdiff_clip.pth "
                f"or one trained with Flan-T5-XXL as the decoder)."
            )
        if cond.shape[-1] != aligned.shape[-1]:
            raise ValueError(
                f"The base conditioning has width {cond.shape[-1]} (shape {tuple(cond.shape)}) but the aligned "
                f"features have width {aligned.shape[-1]}. ThinkDiff writes T5-XXL features: use a FLUX text "
                f"encoder (DualCLIPLoader, type flux) for the base conditioning."
            )
        batch = max(cond.shape[0], aligned.shape[0])
        tokens = _broadcast(aligned.to(device=cond.device, dtype=cond.dtype), batch, "aligned token sets")
        cond = _broadcast(cond, batch, "base conditionings")
        pieces = {"replace": [tokens], "prepend": [tokens, cond], "append": [cond, tokens]}[mode]
        new_extras = dict(extras)
        pooled = extras.get("pooled_output")
        if isinstance(pooled, torch.Tensor):
            new_extras["pooled_output"] = _broadcast(pooled, batch, "pooled vectors")
        mask = extras.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            ones = torch.ones(batch, tokens.shape[1], dtype=mask.dtype, device=mask.device)
            mask = _broadcast(mask, batch, "attention masks")
            new_extras["attention_mask"] = {"replace": ones, "prepend": torch.cat([ones, mask], 1),
                                            "append": torch.cat([mask, ones], 1)}[mode]
        merged.append([torch.cat(pieces, dim=1), new_extras])
    return merged
