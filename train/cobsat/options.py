"""Everything `python -m train.cobsat` reads, declared once like the training tools' options (`train.config`).

Sections become dotted flags (`--generation.steps 4`, `--judge.kind qwen`) and keys of a `--config` YAML or
JSON file. An option left at null takes the reference value, or with `--tiny` the smoke run's (`resolved`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any

from thinkdiff_core.devices import DTYPES
from thinkdiff_core.pipeline import (
    FLUX_DEV_ID, METHODS, OFFICIAL_LVLM_ALIGNER, OFFLOAD_MODES, QWEN2_VL_ID, REFERENCE_GUIDANCE, REFERENCE_SIZE,
    REFERENCE_STEPS,
)
from thinkdiff_core.vlm import GenerationSettings

from .. import config as cfg
from .clip_score import CLIP_SCORE_ID
from .judge import LLAVA_JUDGE_ID, QWEN_JUDGE_ID
from .tasks import SHOTS, TASKS

STAGES = ("generate", "judge", "clip", "report")
JUDGES = ("llava", "qwen")
MODEL_DTYPES = ("auto", *DTYPES)
DEFAULTS = GenerationSettings()

REFERENCE: dict[str, Any] = {
    "num_prompts": 1000,
    "generation": {"vlm": QWEN2_VL_ID, "aligner": OFFICIAL_LVLM_ALIGNER, "flux": FLUX_DEV_ID, "steps": REFERENCE_STEPS,
                   "size": REFERENCE_SIZE, "max_new_tokens": DEFAULTS.max_new_tokens},
    "judge": {"kind": "llava", "max_new_tokens": 512},
}
"""What an option left at null becomes: the benchmark's and the paper's settings."""
TINY: dict[str, Any] = {
    "num_prompts": 2,
    "generation": {"steps": 2, "size": 64, "max_new_tokens": 16},
    "judge": {"kind": "qwen", "max_new_tokens": 8},
}
"""What an option left at null becomes with `--tiny` (the models it names are built by the tiny run itself)."""


def _null_gives(section: str, key: str) -> str:
    """The help's account of a null option, read from the tables above so the two cannot disagree."""
    reference = REFERENCE[section][key] if section else REFERENCE[key]
    tiny = (TINY.get(section, {}) if section else TINY).get(key)
    return f"null: {reference}" + (f" ({tiny} with --tiny)" if tiny is not None else "")


@dataclasses.dataclass
class GenerationOptions:
    """The generate stage: the models, the methods compared and the sampling settings (recorded in run.json)."""

    vlm: str | None = cfg.option(None, f"VLM folder or Hub id; {_null_gives('generation', 'vlm')}")
    aligner: str | None = cfg.option(None, f"aligner file or <repo>/<file>; {_null_gives('generation', 'aligner')}")
    flux: str | None = cfg.option(None, f"FLUX folder or Hub id; {_null_gives('generation', 'flux')}")
    dtype: str = cfg.option("auto", "what the models compute in (auto: bf16 on a GPU, fp32 on the CPU)",
                            choices=MODEL_DTYPES)
    device: str | None = cfg.option(None, "cuda, cuda:1, cpu; null: cuda if available")
    offload: str = cfg.option("none", "model: whole models visit the GPU in turn; sequential: layer by layer",
                              choices=OFFLOAD_MODES)
    methods: list[str] = cfg.option(["thinkdiff"], "compared on the same prompts, seeds and VLM answers (see "
                                                   "docs/cobsat.md)", choices=METHODS)
    text_prompt: str = cfg.option("{word}", "thinkdiff+text: the text after the aligned answer; {word} is the query "
                                            "word")
    batch_size: int = cfg.option(8, "prompts the VLM answers and FLUX draws at once")
    seed: int = cfg.option(DEFAULTS.seed, "the run's seed; each prompt's seeds derive from it", minimum=0)
    steps: int | None = cfg.option(None, f"FLUX steps; {_null_gives('generation', 'steps')}")
    guidance: float = cfg.option(REFERENCE_GUIDANCE, "FLUX's distilled guidance scale")
    size: int | None = cfg.option(None, f"image height and width; {_null_gives('generation', 'size')}")
    temperature: float = cfg.option(DEFAULTS.temperature, "VLM sampling temperature (0: greedy)")
    top_p: float = cfg.option(DEFAULTS.top_p, "VLM nucleus sampling: the share of probability kept")
    max_new_tokens: int | None = cfg.option(None, f"the VLM answer's length in tokens; "
                                                  f"{_null_gives('generation', 'max_new_tokens')}")
    min_new_tokens: int | None = cfg.option(None, "the VLM answer's least length; null: max_new_tokens", minimum=0)


@dataclasses.dataclass
class JudgeOptions:
    """The judge and clip stages: which models read the images, and how."""

    kind: str | None = cfg.option(None, f"the VQA model that reads each image; {_null_gives('judge', 'kind')}",
                                  choices=JUDGES)
    model: str | None = cfg.option(None, f"its folder or Hub id; null: {LLAVA_JUDGE_ID} (llava) or {QWEN_JUDGE_ID} "
                                         f"(qwen)")
    clip_model: str | None = cfg.option(None, f"CLIP for the similarity metric; null: {CLIP_SCORE_ID}")
    dtype: str | None = cfg.option(None, "what the judge computes in; null: fp16 for llava (the benchmark's), "
                                         "generation.dtype for qwen", choices=MODEL_DTYPES)
    batch_size: int = cfg.option(1, "images per judge call (1 as the benchmark; see bench/cobsat_judge_batching.py)")
    max_new_tokens: int | None = cfg.option(None, f"the judge answer's length; {_null_gives('judge', 'max_new_tokens')}")


@dataclasses.dataclass
class CobsatConfig:
    """Everything `python -m train.cobsat` reads."""

    out: str = cfg.option("", "run folder (images, judgements, reports); required")
    cobsat_dir: str | None = cfg.option(None, "CoBSAT checkout with datasets/ and load_datasets/; null: required "
                                              "unless --tiny (which writes a synthetic one under out)")
    stages: list[str] = cfg.option(list(STAGES), "the stages to run; generate, judge and clip skip what out already "
                                                 "holds", choices=STAGES)
    tasks: list[int] = cfg.option(list(TASKS), "task ids 1..10")
    shots: list[int] = cfg.option(list(SHOTS), "in-context examples per prompt")
    num_prompts: int | None = cfg.option(None, f"first N prompts per task; {_null_gives('', 'num_prompts')}")
    shard: int = cfg.option(0, "this process's share of the prompts, 0..num_shards - 1", minimum=0)
    num_shards: int = cfg.option(1, "processes splitting the prompts (one per GPU)")
    tiny: bool = cfg.option(False, "synthetic dataset + tiny models, offline (smoke run)")
    generation: GenerationOptions = cfg.section(GenerationOptions)
    judge: JudgeOptions = cfg.section(JudgeOptions)


def _filled(options: Any, values: dict[str, Any]) -> Any:
    """`options` with its null fields (in its sections too) set from `values`; a given value is kept."""
    changes = {}
    for key, value in values.items():
        current = getattr(options, key)
        if isinstance(value, dict):
            changes[key] = _filled(current, value)
        elif current is None:
            changes[key] = value
    return replace(options, **changes)


def resolved(config: CobsatConfig) -> CobsatConfig:
    """A new config with the reference (or tiny) values for the options left at null, after checking the options
    that must agree; `config` itself is left as given."""
    if not config.out:
        raise ValueError("give --out (the run folder for images, judgements and reports).")
    if not 0 <= config.shard < config.num_shards:
        raise ValueError(f"--shard {config.shard} is outside 0..{config.num_shards - 1} "
                         f"(--num_shards {config.num_shards}).")
    models = {"generation": ("vlm", "aligner", "flux"), "judge": ("model", "clip_model")}
    given = [f"--{section}.{key}" for section, keys in models.items() for key in keys
             if getattr(getattr(config, section), key) is not None]
    if config.tiny and given:
        raise ValueError(f"--tiny builds its own models; drop {', '.join(given)} or drop --tiny.")
    if config.cobsat_dir is None and not config.tiny:
        raise ValueError("--cobsat_dir is required (a CoBSAT checkout with datasets/), or use --tiny.")
    config = _filled(config, TINY) if config.tiny else config
    config = _filled(config, REFERENCE)
    generation = config.generation
    if generation.min_new_tokens is None:
        config = replace(config, generation=replace(generation, min_new_tokens=generation.max_new_tokens))
    if config.cobsat_dir is None:  # --tiny: the synthetic folder lives in the run folder
        config = replace(config, cobsat_dir=str(Path(config.out) / "synthetic_cobsat"))
    return config
