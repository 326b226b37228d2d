"""The proxy: a frozen T5 / Flan-T5 decoder reading aligned features as if a T5 encoder wrote them.

ThinkDiff never trains against the diffusion model. FLUX reads T5-encoder outputs, and the T5
decoder reads the same space, so teaching the aligner to make the frozen decoder predict text from
VLM features puts those features where FLUX expects its prompt. For the LVLM variant the encoder is
not needed: its final norm weight initialises the aligner's output norm, then it is deleted (half
the model's memory). The CLIP variant keeps it to encode the caption prefix, and adds BLIP-2's
frozen vision tower, whose tokens the aligner reads (computed on the fly, no precompute).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoTokenizer, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from thinkdiff_core.aligner import Aligner
from thinkdiff_core.hub import check_model_source
from thinkdiff_core.vision import VisionEncoder
from thinkdiff_core.devices import resolve_dtype

from .recipe import IGNORE_INDEX, feature_mask


@dataclass
class ProxyDecoder:
    """The frozen T5 with its tokenizer, the encoder norm weight the aligner starts from, and (CLIP) the
    frozen vision tower."""

    model: T5ForConditionalGeneration
    tokenizer: object
    model_id: str
    encoder_norm_weight: torch.Tensor
    uses_dropout: bool = False
    """Whether a training forward draws random numbers (some dropout rate above 0)."""
    vision: VisionEncoder | None = None
    """The CLIP variant's BLIP-2 vision tower (eval mode, no gradients); None for LVLM."""

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype


def load_decoder(name_or_path: str, keep_encoder: bool = False, dtype: str = "auto",
                 device: torch.device | str = "cpu", dropout: float | None = None,
                 vision_encoder: str | None = None) -> ProxyDecoder:
    """Load T5 frozen in `dtype`; drop the encoder unless the variant needs it.

    The model stays in train mode, as in the reference (Flan-T5's dropout is active while the
    aligner trains, in the kept encoder too); `dropout` replaces the rate, 0 switches it off.
    `vision_encoder` (CLIP: a BLIP-2 folder, converted vision file or Hub id) also loads the vision
    tower, in the same dtype and on the same device, frozen and in eval mode.
    """
    device = torch.device(device)
    check_model_source(name_or_path, "model.decoder", "a T5 / Flan-T5 folder (config.json + weights) or a Hub id like "
                                                      "google/flan-t5-xxl")
    model = T5ForConditionalGeneration.from_pretrained(name_or_path, dtype=resolve_dtype(dtype, device))
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    norm_weight = model.encoder.final_layer_norm.weight.detach().float().clone()
    if not keep_encoder:
        del model.encoder  # forward and generate only need encoder_outputs
    model.requires_grad_(False).train().to(device)
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = dropout
    uses_dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
    vision = VisionEncoder.from_pretrained(vision_encoder, dtype=dtype, device=device) if vision_encoder else None
    return ProxyDecoder(model, tokenizer, str(name_or_path), norm_weight, uses_dropout, vision)


def new_aligner(input_size: int, decoder: ProxyDecoder, seed: int) -> Aligner:
    """A fresh aligner (seeded) whose output norm starts from the T5 encoder's final norm (paper Fig. 7)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        aligner = Aligner(input_size, decoder.hidden_size)
    aligner.init_norm_from_t5(decoder.encoder_norm_weight)
    return aligner


def decoder_loss(model: T5ForConditionalGeneration, states: torch.Tensor, mask: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-mean cross-entropy of `labels` (-100 = padding) given encoder-side `states` (the irreducible work)."""
    out = model(encoder_outputs=(states.to(model.lm_head.weight.dtype),), attention_mask=mask, labels=labels,
                decoder_attention_mask=(labels != IGNORE_INDEX).long(), use_cache=False)
    return out.loss, out.logits


def encoder_states(aligner: nn.Module, decoder: ProxyDecoder, batch: dict,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """What the frozen decoder cross-attends to, and its mask.

    LVLM: the aligned features of tokens [:s]. CLIP, in the reference's order: the aligned vision
    tokens of the image (mask 1), then the frozen T5 encoder's output for the caption's first part
    (its own mask). The vision tower and the T5 encoder run without gradients: only the aligner learns.
    """
    weight = next(aligner.parameters())
    if "pixel_values" not in batch:
        features = batch["features"].to(device=device, dtype=weight.dtype, non_blocking=True)
        return aligner(features), feature_mask(batch, device)
    if decoder.vision is None or getattr(decoder.model, "encoder", None) is None:
        raise ValueError("A ThinkDiff-CLIP batch needs the vision tower and the T5 encoder: load the proxy with "
                         "load_decoder(..., keep_encoder=True, vision_encoder=PATH).")
    prefix_mask = batch["prefix_mask"].to(device, non_blocking=True)
    with torch.no_grad():
        tokens = decoder.vision.encode_pixels(batch["pixel_values"].to(device, non_blocking=True))
        prefix = decoder.model.encoder(input_ids=batch["prefix_ids"].to(device, non_blocking=True),
                                       attention_mask=prefix_mask).last_hidden_state
    aligned = aligner(tokens.to(weight.dtype))
    image_mask = torch.ones(aligned.shape[:2], dtype=prefix_mask.dtype, device=device)
    return torch.cat([aligned, prefix.to(aligned.dtype)], dim=1), torch.cat([image_mask, prefix_mask], dim=1)


def proxy_loss(aligner: nn.Module, decoder: ProxyDecoder, batch: dict,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training objective: aligned features -> frozen decoder -> cross-entropy on the target text."""
    states, mask = encoder_states(aligner, decoder, batch, device)
    return decoder_loss(decoder.model, states, mask, batch["labels"].to(device, non_blocking=True))


@contextlib.contextmanager
def inference_mode(decoder: ProxyDecoder) -> Iterator[None]:
    """Dropout off while measuring, then back to the training mode."""
    was_training = decoder.model.training
    decoder.model.eval()
    try:
        yield
    finally:
        decoder.model.train(was_training)


@torch.no_grad()
def greedy_decode(decoder: ProxyDecoder, states: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> list[str]:
    """What the frozen decoder writes, greedily, from encoder-side `states` (see `encoder_states`)."""
    ids = decoder.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states.to(decoder.dtype)),
                                 attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return decoder.tokenizer.batch_decode(ids, skip_special_tokens=True)
