"""The proxy: a frozen T5 / Flan-T5 decoder reading aligned features as if a T5 encoder wrote them.

ThinkDiff never trains against the diffusion model. FLUX reads T5-encoder outputs, and the T5
decoder reads the same space, so teaching the aligner to make the frozen decoder predict text from
VLM features puts those features where FLUX expects its prompt. For the LVLM variant the encoder is
not needed: its final norm weight initialises the aligner's output norm, then it is deleted (half
the model's memory). The CLIP variant keeps it to encode the caption prefix.
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
from thinkdiff_core.vlm import resolve_dtype

from .recipe import IGNORE_INDEX, feature_mask


@dataclass
class ProxyDecoder:
    """The frozen T5 with its tokenizer, and the encoder norm weight the aligner starts from."""

    model: T5ForConditionalGeneration
    tokenizer: object
    model_id: str
    encoder_norm_weight: torch.Tensor
    uses_dropout: bool = False
    """Whether a training forward draws random numbers (some dropout rate above 0)."""

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype



def load_decoder(name_or_path: str, keep_encoder: bool = False, dtype: str = "auto",
                 device: torch.device | str = "cpu", dropout: float | None = None) -> ProxyDecoder:
    """Load T5 frozen in `dtype`; drop the encoder unless the variant needs it.

    The model stays in train mode, as in the reference (Flan-T5's dropout is active while the
    aligner trains); `dropout` replaces the rate, 0 switches it off.
    """
    device = torch.device(device)
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
    return ProxyDecoder(model, tokenizer, str(name_or_path), norm_weight, uses_dropout)


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


def proxy_loss(aligner: nn.Module, decoder: ProxyDecoder, batch: dict,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training objective: aligned features -> frozen decoder -> cross-entropy on the target text."""
    weight = next(aligner.parameters())
    features = batch["features"].to(device=device, dtype=weight.dtype, non_blocking=True)
    return decoder_loss(decoder.model, aligner(features), feature_mask(batch, device),
                        batch["labels"].to(device, non_blocking=True))


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
def greedy_decode(aligner: nn.Module, decoder: ProxyDecoder, batch: dict, device: torch.device,
                  max_new_tokens: int) -> list[str]:
    """What the frozen decoder writes from the aligned features, greedily."""
    weight = next(aligner.parameters())
    aligned = aligner(batch["features"].to(device=device, dtype=weight.dtype)).to(decoder.dtype)
    ids = decoder.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=aligned),
                                 attention_mask=feature_mask(batch, device), max_new_tokens=max_new_tokens,
                                 do_sample=False, num_beams=1)
    return decoder.tokenizer.batch_decode(ids, skip_special_tokens=True)
