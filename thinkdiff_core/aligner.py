"""The ThinkDiff aligner: the only trained module of the method.

`Linear(d_in -> d_out) -> GELU -> Linear(d_out -> d_out) -> T5 RMSNorm(d_out)` maps features of a
frozen model (a VLM's generated-token states, or a vision encoder's patch tokens) into the space a
T5-XXL encoder writes, which is the space FLUX reads its prompt from (paper: `mlp2x_gelu_t5_norm`).

The module is an `nn.Sequential` on purpose: its parameter names (`0.*`, `2.*`, `3.weight`) are the
official checkpoint's `mm_projector.*` names with the prefix removed, so the official files and ours
map onto it without a translation table.
"""

from __future__ import annotations

import torch
from torch import nn

T5_HIDDEN_SIZE = 4096
"""Width of a T5-XXL encoder's output: what FLUX, SD3, LTX-Video and friends condition on."""


class T5RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, no bias, computed in float32.

    The paper's Fig. 7 shows training is unstable without this norm, or with it initialised to
    ones; `Aligner.init_norm_from_t5` copies a T5 encoder's final norm weight into it.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        states = hidden_states.float()
        variance = states.pow(2).mean(-1, keepdim=True)
        states = states * torch.rsqrt(variance + self.eps)
        return (self.weight.float() * states).to(hidden_states.dtype)


class Aligner(nn.Sequential):
    """Maps `[..., input_size]` features to `[..., output_size]` T5-encoder-like features."""

    def __init__(self, input_size: int, output_size: int = T5_HIDDEN_SIZE) -> None:
        super().__init__(
            nn.Linear(input_size, output_size),
            nn.GELU(),
            nn.Linear(output_size, output_size),
            T5RMSNorm(output_size),
        )

    @property
    def input_size(self) -> int:
        return self[0].in_features

    @property
    def output_size(self) -> int:
        return self[2].out_features

    @torch.no_grad()
    def init_norm_from_t5(self, final_layer_norm_weight: torch.Tensor) -> None:
        """Copy a T5 encoder's `final_layer_norm.weight` into the output norm (the paper's init)."""
        if final_layer_norm_weight.shape != self[3].weight.shape:
            raise ValueError(
                f"T5 final norm weight has shape {tuple(final_layer_norm_weight.shape)} but the aligner's "
                f"output size is {self.output_size}; build the aligner with output_size="
                f"{final_layer_norm_weight.shape[0]} to match this T5."
            )
        self[3].weight.copy_(final_layer_norm_weight)
