"""The features handed from a feature source (VLM or vision encoder) to an aligner.

One container travels between nodes, scripts and training so that provenance checks happen in one
place: an aligner only accepts tokens of the width and the token recipe it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

LVLM_RECIPE = "vlm-generated-final-norm"
"""Final-norm hidden states of the tokens a VLM generates (the state that produced token i)."""

CLIP_RECIPE = "blip2-vit-cls+patch8x8"
"""BLIP-2 EVA ViT-g tokens: CLS kept, 16x16 patches bilinearly resized to 8x8 (65 per image)."""

RECIPE_VARIANTS = {LVLM_RECIPE: "lvlm", CLIP_RECIPE: "clip"}


@dataclass
class ThinkDiffTokens:
    """Features `[B, T, D]` with their provenance.

    `lengths[b]` is how many of row b's T positions are real (batched VLM rows can stop at EOS);
    `texts` holds the VLM's generated text per row and `token_ids` `[B, T]` its generated ids (both
    empty for a vision encoder); training decodes the ids. `source_family` lets an aligner refuse
    another VLM family's features of the same width (`thinkdiff_core.families`). `prompt_features` holds, when
    asked for, each row's prompt-token states `[P_b, D]` (the input-token ablation's aligner input).
    """

    features: torch.Tensor
    source_model_id: str
    token_recipe: str
    lengths: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    token_ids: torch.Tensor | None = None
    source_family: str = ""
    """The VLM family (`qwen2_vl`, ...) for LVLM tokens; "" when unknown or not a VLM's."""
    prompt_features: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.features.dim() != 3:
            raise ValueError(
                f"ThinkDiffTokens.features must be [batch, tokens, hidden]; got shape {tuple(self.features.shape)}."
            )
        batch, tokens = self.features.shape[:2]
        if not self.lengths:
            self.lengths = [tokens] * batch
        if len(self.lengths) != batch or any(not 0 <= n <= tokens for n in self.lengths):
            raise ValueError(f"lengths {self.lengths} do not fit features of shape {tuple(self.features.shape)}.")
        if self.token_recipe not in RECIPE_VARIANTS:
            raise ValueError(f"unknown token recipe {self.token_recipe!r}; known: {sorted(RECIPE_VARIANTS)}.")

    @property
    def hidden_size(self) -> int:
        return self.features.shape[-1]

    @property
    def variant(self) -> str:
        return RECIPE_VARIANTS[self.token_recipe]

    @property
    def text(self) -> str:
        """All rows' texts, one per line: what a node shows."""
        return "\n".join(self.texts)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ThinkDiffTokens":
        return replace(self, features=self.features.to(device=device, dtype=dtype))
