"""Where a model runs and in which dtype: one table and one rule for the library, the nodes and train/."""

from __future__ import annotations

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def compute_device(device: torch.device | str | None = None) -> torch.device:
    """Where a model loaded now will run: the given device, else CUDA when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` picks bf16 on CUDA (fp16 where bf16 is missing), fp16 on Apple MPS, fp32 on CPU.

    A `torch.dtype` passes through: a caller that loads on the CPU for another device (ComfyUI's
    memory manager moves the model later) resolves `auto` against that device itself.
    """
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}.")
    return DTYPES[name]


def training_autocast(choice: str) -> str:
    """Accelerate's `mixed_precision` for training: bf16 autocast (the reference) or none.

    fp16 would need loss scaling and is not offered; `auto` is bf16 where CUDA has it, else none.
    """
    if choice == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if choice not in ("bf16", "no"):
        raise ValueError(f"run.mixed_precision must be auto, bf16 or no; got {choice!r} (fp16 autocast needs loss "
                         f"scaling; use bf16 on GPUs that have it, or no).")
    return choice
