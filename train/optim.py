"""The reference optimiser: AdamW with decay on matrices only, linear warm-up, then a cosine to min_lr.

Warm-up rises from `warmup_lr` to `lr` over `warmup_steps`; from there the cosine is evaluated at the
absolute step over `max_steps` (as the reference's LAVIS scheduler does), ending at `min_lr`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimOptions


def learning_rate(step: int, options: OptimOptions) -> float:
    if step < options.warmup_steps:
        return min(options.lr, options.warmup_lr + (options.lr - options.warmup_lr) * step / max(options.warmup_steps, 1))
    progress = min(step, options.max_steps) / max(options.max_steps, 1)
    return options.min_lr + (options.lr - options.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, options: OptimOptions) -> torch.optim.AdamW:
    """AdamW; biases and norm weights (1-D) get no weight decay, as in the reference.

    The fused kernel (CPU and CUDA) makes the step of a small aligner cost a fraction of the
    per-tensor loop's Python overhead.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=learning_rate(0, options), betas=(options.beta1, options.beta2),
                             fused=fused or None)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
