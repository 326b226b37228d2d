"""Aligned features put into a ComfyUI conditioning for each T5-XXL-conditioned model.

A conditioning is a list of `[cond, extras]` pairs. The aligner writes T5-XXL (v1.1) encoder space,
which ComfyUI feeds to several models in three layouts (read from ComfyUI's text encoders):

- `flux` (FLUX.1 dev/schnell, FLUX.1 Kontext): `cond` is T5 `[B, >=256, 4096]`; `extras` has
  `pooled_output` (CLIP-L, `[B, 768]`), `guidance`, and for Kontext `reference_latents`.
- `sd3` (SD3 / SD3.5): `cond` is the CLIP-L+G segment (77 tokens per prompt chunk, 768 + 1280 wide,
  zero-padded to 4096) followed by the T5 tokens; `pooled_output` is `[B, 2048]`. Only the T5
  segment is ThinkDiff's: the CLIP segment and the pooled vector stay as they are.
- `t5` (Chroma, LTX-Video): T5 tokens only, no pooled vector, often a 2-D `attention_mask` `[B, L]`
  (LTX-Video's text encoder pads to 128 and masks the padding).

ThinkDiff rewrites the T5 tokens by `mode`:

- `replace`: the aligned features are the whole prompt (the reference ThinkDiff-LVLM recipe; give
  the base from an empty prompt).
- `prepend`: `[aligned, base tokens]` (the ThinkDiff-CLIP recipe: images before the prompt).
- `append`: `[base tokens, aligned]`.

`strength` multiplies the aligned features (as Redux's `multiply` does), so 1.0 is the paper's recipe.
A 2-D attention mask gets ones for the new tokens; a 3-D attention bias (core Redux with `attn_bias`:
`[B, L + n_ref, L + n_ref]`, the reference-image rows and columns last) gets rows and columns for
them copied from the first prompt token, so ThinkDiff and Redux chain in either order. `token_budget` trims the base's
masked padding so the result fits a model's text length. Every other entry of `extras` is kept;
inputs are never modified in place (ComfyUI caches them).
"""

from __future__ import annotations

from typing import Any

import torch

from .aligner import T5_HIDDEN_SIZE

MODES = ("replace", "prepend", "append")

# The node's target choice -> the layout rule above ("auto" reads the rule from the base).
TARGETS = {"auto": None, "flux": "flux", "flux_kontext": "flux", "chroma": "t5", "sd3": "sd3", "ltxv": "t5"}

POOLED_WIDTHS = {"flux": 768, "sd3": 2048, "t5": None}
SD3_CLIP_WIDTH, SD3_CLIP_CHUNK = 768 + 1280, 77

ENCODERS = {
    "flux": "DualCLIPLoader with type flux (clip_l.safetensors + t5xxl_fp16.safetensors)",
    "sd3": "TripleCLIPLoader (clip_l.safetensors, clip_g.safetensors, t5xxl_fp16.safetensors)",
    "t5": "CLIPLoader with type chroma or ltxv (t5xxl_fp16.safetensors)",
}

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


def _check_width(cond: torch.Tensor, aligned: torch.Tensor) -> None:
    if cond.shape[-1] == aligned.shape[-1]:
        return
    if cond.shape[-1] == T5_HIDDEN_SIZE:
        raise ValueError(
            f"The aligner writes {aligned.shape[-1]}-wide features but the base conditioning is T5-XXL "
            f"({T5_HIDDEN_SIZE} wide, shape {tuple(cond.shape)}): this aligner was not trained for T5-XXL models. "
            f"Load an aligner with output size {T5_HIDDEN_SIZE} (the official thinkdiff_lvlm.pth / thinkdiff_clip.pth "
            f"or one trained with Flan-T5-XXL as the decoder)."
        )
    raise ValueError(
        f"The base conditioning has width {cond.shape[-1]} (shape {tuple(cond.shape)}) but the aligned "
        f"features have width {aligned.shape[-1]}. ThinkDiff writes T5-XXL features: use a FLUX text "
        f"encoder (DualCLIPLoader, type flux) for the base conditioning, or the T5-XXL encoder of another "
        f"supported model (SD3: TripleCLIPLoader; Chroma / LTX-Video: CLIPLoader with type chroma / ltxv)."
    )


def detect_rule(cond: torch.Tensor, extras: dict) -> str:
    """The layout rule of one `[cond, extras]` read from its pooled vector, or an error naming the encoder to use.

    Only a real T5-XXL-wide base is told apart by its pooled width; a narrower one (tiny stand-in models) is
    FLUX-like when it has a pooled vector and T5-only when it has none.
    """
    if "conditioning_llama3" in extras:
        raise ValueError(
            "The base conditioning comes from HiDream's text encoder (it carries conditioning_llama3), which "
            "ThinkDiff does not support. Connect the text encoder of a supported model: FLUX / Kontext "
            f"({ENCODERS['flux']}), SD3 ({ENCODERS['sd3']}), Chroma / LTX-Video ({ENCODERS['t5']})."
        )
    pooled = extras.get("pooled_output")
    if pooled is None:
        return "t5"
    if cond.shape[-1] != T5_HIDDEN_SIZE:
        return "flux"
    width = pooled.shape[-1]
    for rule, expected in POOLED_WIDTHS.items():
        if expected == width:
            return rule
    raise ValueError(
        f"The base conditioning has a pooled vector of width {width}, which is neither FLUX's CLIP-L (768) nor "
        f"SD3's CLIP-L+G (2048), so it is not from a T5-XXL model ThinkDiff supports. Connect FLUX / Kontext "
        f"({ENCODERS['flux']}), SD3 ({ENCODERS['sd3']}) or Chroma / LTX-Video ({ENCODERS['t5']}) text encoding."
    )


def _rule(target: str, cond: torch.Tensor, extras: dict) -> str:
    """The rule for `target`, checked against what the base conditioning actually is."""
    if target not in TARGETS:
        raise ValueError(f"Unknown target {target!r}; choose one of {tuple(TARGETS)}.")
    found = detect_rule(cond, extras)
    wanted = TARGETS[target]
    if wanted is not None and wanted != found:
        pooled = extras.get("pooled_output")
        has = "no pooled vector" if pooled is None else f"a pooled vector of width {pooled.shape[-1]}"
        raise ValueError(
            f"The target is {target} but the base conditioning has {has}, as {found} text encoding writes it. "
            f"For {target} connect {ENCODERS[wanted]}, or set target to auto."
        )
    return found


def _clip_segment_length(cond: torch.Tensor) -> int:
    """How many leading tokens of an SD3 conditioning are the CLIP-L+G segment (zero past its 2048 columns)."""
    if cond.shape[-1] != T5_HIDDEN_SIZE:
        raise ValueError(
            f"An SD3 base conditioning is {T5_HIDDEN_SIZE} wide (CLIP-L+G zero-padded, then T5), but this one is "
            f"{tuple(cond.shape)}. Connect {ENCODERS['sd3']}."
        )
    is_clip = (cond[..., SD3_CLIP_WIDTH:] == 0).all(dim=-1).all(dim=0)
    length = int(torch.cumprod(is_clip.int(), 0).sum())
    if length % SD3_CLIP_CHUNK:
        raise ValueError(
            f"The SD3 base conditioning starts with {length} zero-padded CLIP tokens, not a multiple of "
            f"{SD3_CLIP_CHUNK}: it is not the layout ComfyUI's SD3 text encoder writes. Connect {ENCODERS['sd3']}."
        )
    return length


def _text_padding(mask: torch.Tensor | None, length: int, head: int) -> int:
    """Masked-out positions at the end of the base's T5 text in every row (0 without a 2-D mask)."""
    if mask is None or mask.dim() != 2:
        return 0
    text = mask[:, head:] if mask.shape[1] == length else mask
    padded = torch.flip((text == 0).all(dim=0), [0]).int()
    return int(torch.cumprod(padded, 0).sum())


def _budget_trim(budget: int, head: int, text: int, tokens: int, padding: int, mode: str) -> int:
    """How many trailing padding tokens of the base text to drop so the result fits `budget` (0: no budget)."""
    kept_text = 0 if mode == "replace" else text
    total = head + kept_text + tokens
    if budget <= 0 or total <= budget:
        return 0
    real = head + tokens + (0 if mode == "replace" else text - padding)
    if real > budget:
        why = "" if mode == "replace" else (
            f" and {text - padding} prompt tokens" + (f" ({padding} padding tokens could be trimmed)" if padding else
                                                      " (without an attention mask the prompt's padding cannot be told apart)"))
        fixed = f" after {head} CLIP tokens" if head else ""
        raise ValueError(
            f"The token budget is {budget} but the conditioning needs {real}: {tokens} aligned tokens{why}{fixed}. "
            f"Shorten the prompt, lower max_new_tokens on ThinkDiff Reason, or raise token_budget (0 turns it off)."
        )
    return total - budget


def _order(mode: str, head: int, text: int, tokens: int, trim: int) -> torch.Tensor:
    """Source index of each output token in `cat([base cond, aligned], 1)`: the head, then the new text."""
    base_text = torch.arange(head, head + text - trim)
    new = torch.arange(head + text, head + text + tokens)
    pieces = {"replace": [new], "prepend": [new, base_text], "append": [base_text, new]}[mode]
    return torch.cat([torch.arange(head), *pieces])


def _extend_mask(mask: torch.Tensor, order: torch.Tensor, length: int, tokens: int, head: int,
                 extras: dict) -> torch.Tensor:
    """The mask for the reordered tokens: 2-D `[B, L]` (or SD3's T5-only `[B, L - head]`) or a 3-D bias."""
    if mask.dim() == 2:
        offset = 0 if mask.shape[1] == length else head
        if mask.shape[1] != length - offset:
            raise ValueError(
                f"The base conditioning's attention_mask covers {mask.shape[1]} tokens but its cond has {length}: "
                f"the conditioning was changed by a node that did not update the mask."
            )
        source = torch.cat([mask, mask.new_full((mask.shape[0], tokens), True if mask.dtype == torch.bool else 1)], 1)
        return source[:, order[offset:] - offset]
    if mask.dim() != 3 or mask.shape[1] != mask.shape[2] or mask.shape[1] < length:
        raise ValueError(
            f"The base conditioning's attention_mask has shape {tuple(mask.shape)}, neither [B, {length}] nor a "
            f"square attention bias [B, {length} + reference tokens, ...] as Redux writes it."
        )
    references = mask.shape[1] - length
    shape = extras.get("attention_mask_img_shape")
    if shape is not None and references != shape[0] * shape[1]:
        raise ValueError(
            f"The base conditioning's attention bias has {references} reference-image positions but "
            f"attention_mask_img_shape {tuple(shape)} says {shape[0] * shape[1]}: the conditioning was changed by a "
            f"node that did not update the bias."
        )
    # A new token attends and is attended like the base's first prompt token (so Redux's bias on its own
    # tokens applies to ours too, as when Redux runs after ThinkDiff); reference positions stay last.
    first_text = head if length > head else 0
    index = torch.where(order < length, order, torch.full_like(order, first_text))
    index = torch.cat([index, torch.arange(length, mask.shape[1], device=index.device)])
    return mask[:, index][:, :, index]


def merge_conditioning(base: Conditioning, aligned: torch.Tensor, mode: str = "replace", target: str = "auto",
                       strength: float = 1.0, token_budget: int = 0) -> Conditioning:
    """Put `aligned` `[B, T, D]` into every `[cond, extras]` of `base` by `mode`; return a new conditioning.

    `target` picks the layout rule (`TARGETS`; `auto` reads it from each entry's pooled vector), `strength`
    scales the aligned features, `token_budget` (0: none) caps the output's text length by trimming masked
    padding of the base and refuses when the real tokens alone exceed it.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose one of {MODES}.")
    if not base:
        raise ValueError("The base conditioning is empty; connect the output of a text encode node "
                         "(FLUX, SD3, Chroma or LTX-Video).")
    merged = []
    for cond, extras in base:
        _check_width(cond, aligned)
        rule = _rule(target, cond, extras)
        batch = max(cond.shape[0], aligned.shape[0])
        tokens = _broadcast(aligned.to(device=cond.device, dtype=cond.dtype), batch, "aligned token sets")
        if strength != 1.0:
            tokens = tokens * strength
        cond = _broadcast(cond, batch, "base conditionings")
        length = cond.shape[1]
        head = _clip_segment_length(cond) if rule == "sd3" else 0
        mask = extras.get("attention_mask")
        mask = _broadcast(mask, batch, "attention masks") if isinstance(mask, torch.Tensor) else None
        if mask is not None and mask.dim() == 3 and mode == "replace":
            raise ValueError(
                "The base conditioning carries a 3-D attention bias (Redux applied before ThinkDiff), and replace "
                "would drop Redux's image tokens with the prompt. Apply Redux after ThinkDiff Conditioning, or use "
                "prepend / append."
            )
        trim = _budget_trim(token_budget, head, length - head, tokens.shape[1], _text_padding(mask, length, head), mode)
        order = _order(mode, head, length - head, tokens.shape[1], trim).to(cond.device)
        new_extras = dict(extras)
        pooled = extras.get("pooled_output")
        if isinstance(pooled, torch.Tensor):
            new_extras["pooled_output"] = _broadcast(pooled, batch, "pooled vectors")
        if mask is not None:
            new_extras["attention_mask"] = _extend_mask(mask, order.to(mask.device), length, tokens.shape[1], head,
                                                        extras)
        merged.append([torch.cat([cond, tokens], 1)[:, order], new_extras])
    return merged
