"""Final-norm features of given tokens by a plain forward (teacher forcing), for comparing VLMs on the same tokens.

`VisionLanguageModel.generate` captures the state that produced each generated token; feeding the prompt
followed by those tokens through the base model gives the same states (the parity tests check it). Two
models (bf16 and a quantized copy) compared this way see identical inputs, so the difference is theirs alone.
"""

from __future__ import annotations

import torch

from ..prompts import Prompt
from ..vlm import VisionLanguageModel


@torch.no_grad()
def forced_features(vlm: VisionLanguageModel, prompt: Prompt, token_ids: torch.Tensor) -> torch.Tensor:
    """`[T, hidden]` float32: the final-norm state at prompt position P-1+i for each of the T given token ids."""
    device = vlm.device
    inputs = {k: v.to(device) for k, v in vlm.prepare([prompt]).items()}
    extra = token_ids.to(device).unsqueeze(0)
    prompt_length = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(vlm.precision.compute)
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra, dtype=torch.int32)], 1)
    states = vlm.model.model(**inputs).last_hidden_state[0]  # the base model's last state is after the final norm
    return states[prompt_length - 1: prompt_length - 1 + token_ids.shape[0]].float().cpu()
