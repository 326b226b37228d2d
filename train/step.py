"""One optimizer step of the aligner against the frozen decoder, and the checksum that proves ranks stay in sync."""

from __future__ import annotations

import zlib
from contextlib import nullcontext

import torch
from accelerate import Accelerator

from .config import OptimOptions
from .decoder import ProxyDecoder, proxy_loss
from .optim import learning_rate, set_learning_rate


def step_seed(seed: int, rank: int, step: int) -> int:
    """Each step reseeds torch (the decoder's dropout) from (seed, rank, step): a resumed run needs no RNG state."""
    return zlib.crc32(f"{seed}:{rank}:{step}".encode())


def train_step(accelerator: Accelerator, aligner: torch.nn.Module, decoder: ProxyDecoder,
               optimizer: torch.optim.Optimizer, micro_batches: list[dict], step: int, options: OptimOptions,
               seed: int) -> tuple[torch.Tensor, float]:
    """One optimizer step over `micro_batches` (gradient accumulation); returns (mean loss, lr).

    `aligner` is the accelerate-prepared module (DDP across processes; gradients are averaged in its
    backward hooks, skipped with `no_sync` until the last micro-batch); `optimizer` a plain AdamW.
    """
    if decoder.uses_dropout:
        torch.manual_seed(step_seed(seed, accelerator.process_index, step))
    lr = learning_rate(step, options)
    set_learning_rate(optimizer, lr)
    autocast = accelerator.autocast if accelerator.mixed_precision != "no" else nullcontext
    # Written out rather than accelerate's `accumulate`: that counts micro-batches through a prepared DataLoader,
    # and ours is a plain resumable stream; `no_sync` on all but the last micro-batch is the same thing.
    losses = []
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        with nullcontext() if last else accelerator.no_sync(aligner):
            with autocast():
                loss, _ = proxy_loss(aligner, decoder, batch, accelerator.device)
            (loss if len(micro_batches) == 1 else loss / len(micro_batches)).backward()
        losses.append(loss.detach())
    if options.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(aligner.parameters(), options.max_grad_norm, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return (losses[0] if len(losses) == 1 else torch.stack(losses).float().mean()), lr


def weights_crc32(module: torch.nn.Module) -> int:
    """A checksum of the exact weights: ranks that stayed in sync agree bit for bit."""
    crc = 0
    for name, tensor in sorted(module.state_dict().items()):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes(), crc)
    return crc
