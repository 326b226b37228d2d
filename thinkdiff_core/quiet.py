"""Drop the notices third-party libraries print on import that are harmless here, so a user sees only real ones.

On a machine without CUDA or torchvision, importing transformers (which imports torchao and bitsandbytes when they
are installed) prints half a screen of notices before any ThinkDiff output: torchao's CUDA-only kernels that do not
load, torch's deprecation of how torchao registers two enums, transformers' fall-back to the PIL image processors
(the ones ThinkDiff asks for anyway), bitsandbytes' optional CPU kernel package. None of them changes what runs. Each
is dropped by its exact logger and text; everything else those loggers say still shows.
"""

from __future__ import annotations

import logging
import re

HARMLESS = {
    "torchao": re.compile(r"^Failed to load .*torchao[/\\]_C"),
    "torch.utils._pytree": re.compile(r"is an Enum subclass and is now natively supported by torch\.compile"),
    "transformers.utils.import_utils": re.compile(r"requires torchvision \(not installed\); falling back to `\w+Pil`"),
    "diffusers.quantizers.torchao.torchao_quantizer": re.compile(r"^Unable to import `torchao` Tensor objects"),
    "bitsandbytes.backends.cpu.ops": re.compile(r"^Failed to load CPU gemm_4bit_forward from kernels-community"),
}
"""Logger name -> the notice of it that is dropped."""


class _DropHarmless(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def drop_harmless_notices() -> None:
    """Install the filters (before the libraries are imported: some notices are printed at import)."""
    for name, pattern in HARMLESS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHarmless) for f in logger.filters):
            logger.addFilter(_DropHarmless(pattern))
