"""Configuration for the training tools: dataclasses, YAML/JSON files, presets and command-line overrides.

Also the tools' shared command-line ending (`run_tool`): user errors become one `error:` line.

Every option lives in one dataclass field with its help text, so the config file, `--help` and the
code cannot drift apart. Precedence, lowest first: defaults, `--preset NAME`, `--config FILE`, then
`--section.key VALUE` flags. Nested sections become dotted flags (`--optim.lr 2e-4`); a bare boolean flag
(`--run.tensorboard`) means true; lists are `a,b` or `[a, b]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from thinkdiff_core.cli import USER_ERRORS, at_least

PRESET_DIR = Path(__file__).parent / "presets"
Config = TypeVar("Config")


def option(default: Any, help: str, minimum: int = 1, choices: Sequence[Any] = ()) -> Any:
    """A dataclass field with help text (mutable defaults are copied per instance). An int field is refused below
    `minimum`: counts and sizes start at 1, and a field where 0 means something says so with `minimum=0`. With
    `choices`, a value (or each item of a list) outside them is refused, from a file as from a flag."""
    metadata = {"help": help, "minimum": minimum, "choices": tuple(choices)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(kind: Any) -> bool:
    return dataclasses.is_dataclass(kind)


def _scalar_type(kind: Any) -> tuple[Any, bool]:
    """(the type of `X | None`'s X, whether None is allowed)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return kind, False


def parse_value(text: str, kind: Any, name: str) -> Any:
    """A command-line string as the field's type; `none`/`null` for optional fields."""
    base, optional = _scalar_type(kind)
    if optional and text.lower() in ("none", "null", ""):
        return None
    if base is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"--{name} expects true or false, got {text!r}.")
    if typing.get_origin(base) is list:
        items = yaml.safe_load(text) if text.strip().startswith("[") else [t for t in text.split(",") if t]
        item_kind = next(iter(typing.get_args(base)), str)
        return [parse_value(item, item_kind, name) if isinstance(item, str) else item for item in items]
    try:
        return base(text)
    except ValueError as error:
        raise ValueError(f"--{name} expects {getattr(base, '__name__', base)}, got {text!r}.") from error


def _coerce(value: Any, kind: Any, name: str, minimum: int = 1, choices: Sequence[Any] = ()) -> Any:
    """Values from YAML/JSON checked (and ints widened to floats) against the field's type, an int's minimum and the
    field's choices; a list's items are checked one by one."""
    base, optional = _scalar_type(kind)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} may not be null.")
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is float and isinstance(value, str):
        return parse_value(value, kind, name)  # YAML reads 1e-4 (no dot) as a string
    origin = typing.get_origin(base) or base
    if not isinstance(value, origin) or (origin is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {getattr(base, '__name__', base)}, got {value!r} ({type(value).__name__}).")
    if origin is list and typing.get_args(base):
        return [_coerce(item, typing.get_args(base)[0], name, minimum, choices) for item in value]
    if choices and value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}.")
    if origin is int:
        try:
            at_least(value, minimum)
        except ValueError as error:
            raise ValueError(f"{name} {error}.") from None
    return value


def from_dict(cls: type[Config], values: dict[str, Any], prefix: str = "") -> Config:
    """Build `cls` from a (nested) dict, refusing unknown keys so typos do not pass silently."""
    types_ = _field_types(cls)
    metadata = {f.name: f.metadata for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(types_))
    if unknown:
        known = ", ".join(prefix + k for k in types_)
        raise ValueError(f"Unknown config key(s) {[prefix + k for k in unknown]}; known keys: {known}.")
    kwargs = {}
    for key, value in values.items():
        kind = types_[key]
        if _is_section(kind):
            if not isinstance(value, dict):
                raise ValueError(f"{prefix}{key} is a section; give it as a mapping, got {value!r}.")
            kwargs[key] = from_dict(kind, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, kind, prefix + key, metadata[key].get("minimum", 1),
                                  metadata[key].get("choices", ()))
    return cls(**kwargs)


def merge(config: Config, values: dict[str, Any]) -> Config:
    """`config` with the keys of `values` (nested) replaced."""
    current = to_dict(config)

    def deep(base: dict, update: dict) -> dict:
        out = dict(base)
        for key, value in update.items():
            out[key] = deep(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out

    return from_dict(type(config), deep(current, values))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}. Give a .yaml or .json file (see train/presets/).")
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}. Fix that "
                         f"line (a preset in train/presets/ shows the layout).") from error
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ValueError(f"{path} is not valid YAML{at}: {getattr(error, 'problem', None) or error}. Fix that line (a "
                         f"preset in train/presets/ shows the layout).") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of options, got {type(values).__name__}.")
    return values


def read_preset(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"Unknown preset {name!r}; available: {', '.join(presets())}.")
    return read_file(path)


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    out = []
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        if _is_section(types_[f.name]):
            out += _leaves(types_[f.name], f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, types_[f.name], f))
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type, with_presets: bool = False) -> None:
    """`--config`, optionally `--preset`, and one `--section.key` flag per option with its help, choices and
    default (a boolean flag given bare means true)."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file with any of the options below")
    if with_presets:
        parser.add_argument("--preset", metavar="NAME",
                            help=f"start from a preset in train/presets/: {', '.join(presets())}")
    defaults = cls()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, kind, f in _leaves(cls):
        section = name.rsplit(".", 1)[0] if "." in name else ""
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options") if section else parser)
        value = defaults
        for part in name.split("."):
            value = getattr(value, part)
        base, _ = _scalar_type(kind)
        metavar = {bool: "BOOL", int: "INT", float: "FLOAT"}.get(base, "LIST" if typing.get_origin(base) is list else "STR")
        if isinstance(value, list):  # as the flag takes it, unless too long to read in a help line
            shown = ",".join(map(str, value)) if len(str(value)) <= 40 else f"[{len(value)} items]"
        else:
            shown = value
        choices = f"; one of {', '.join(map(str, f.metadata['choices']))}" if f.metadata.get("choices") else ""
        bare = {"nargs": "?", "const": "true"} if base is bool else {}
        group.add_argument(f"--{name}", dest=f"set:{name}", metavar=metavar, default=argparse.SUPPRESS,
                           help=f"{f.metadata.get('help', '')}{choices} (default: {shown})", **bare)


def resolve(cls: type[Config], args: argparse.Namespace) -> Config:
    """Defaults, then the preset, then the config file, then the `--section.key` flags."""
    config = cls()
    if getattr(args, "preset", None):
        config = merge(config, read_preset(args.preset))
    if getattr(args, "config", None):
        config = merge(config, read_file(args.config))
    types_ = {name: kind for name, kind, _ in _leaves(cls)}
    overrides: dict[str, Any] = {}
    for key, text in vars(args).items():
        if not key.startswith("set:"):
            continue
        name = key[4:]
        node = overrides
        *sections, leaf = name.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = parse_value(text, types_[name], name)
    return merge(config, overrides) if overrides else config


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"section.key": value} of a nested options dict (resume checks and TensorBoard take options flat)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)




def run_tool(work: Callable[[], str]) -> int:
    """Run a tool's work and print what it returns (exit 0); a user error prints one line (exit 2)."""
    try:
        text = work()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if text:
        print(text)
    return 0


def section(cls: type) -> Any:
    return dataclasses.field(default_factory=cls)


@dataclasses.dataclass
class ModelOptions:
    variant: str = option("lvlm", "lvlm: a VLM's generated-token features (ThinkDiff-LVLM); clip: BLIP-2 vision "
                                  "tokens of images plus a T5-encoded caption start (ThinkDiff-CLIP)")
    decoder: str = option("google/flan-t5-xxl", "T5 / Flan-T5 folder or Hub id; its frozen decoder is the proxy")
    decoder_dtype: str = option("auto", "dtype of the frozen decoder (and of the CLIP vision tower): auto (bf16 on "
                                        "CUDA, fp32 elsewhere), bf16, fp16, fp32")
    vision_encoder: str = option("Salesforce/blip2-flan-t5-xxl", "clip: the frozen vision tower, a BLIP-2 folder, a "
                                                                 "file from `thinkdiff_core.convert vision`, or a Hub "
                                                                 "id (only the vision shards are downloaded)")
    decoder_dropout: float | None = option(None, "dropout inside the frozen decoder; null keeps its config's value "
                                                 "(the reference trains with Flan-T5's 0.1 on)")
    vlm_tokenizer: str | None = option(None, "tokenizer that decodes the stored token ids; null: the copy train.precompute "
                                             "saved beside the features")
    init_aligner: str | None = option(None, "start from this aligner file (.safetensors or official .pth) instead "
                                            "of a fresh one")


@dataclasses.dataclass
class DataOptions:
    train: str = option("", "lvlm: feature shards written by train.precompute; clip: image-caption tar shards "
                            "(CC-SBU/LAION layout) or a folder with captions.jsonl. Shards as a folder, a brace "
                            "pattern (dir/{000000..000048}.tar) or a comma-separated list")
    eval: str = option("", "held-out data of the same kind and forms; empty: no held-out metrics")
    batch_size: int = option(32, "samples per process per micro-step (the reference: 32 per GPU)")
    num_workers: int = option(2, "DataLoader worker processes per training process (0: load in the training process)", minimum=0)
    shuffle_buffer: int = option(1000, "samples in each worker's shuffle buffer (the reference: 1000)")
    max_split: int = option(128, "lvlm: largest split point: the aligner sees tokens [:s], s uniform in "
                                 "[1, min(T-1, max_split)]")
    masking: str = option("random", "lvlm: random (the paper's split) or none (its ablation, 0.287 vs 0.417 on CoBSAT "
                                    "2-shot: the aligner sees all T tokens, the decoder must reproduce all their text)")
    features: str | None = option(None, "lvlm: what the aligner sees: generated (the paper), input (the prompt "
                                        "tokens' states, its 0.016 ablation) or both; null: what train.precompute "
                                        "--features recorded")
    max_prefix_tokens: int = option(32, "clip: T5 tokens of the caption start the T5 encoder reads (the reference's "
                                        "max_txt_len)")
    max_target_tokens: int = option(128, "T5 tokens of the target text (lvlm: of tokens [s:]; clip: the caption's "
                                         "rest); longer targets are truncated")
    eval_samples: int = option(256, "held-out samples per evaluation")
    log_sample_keys: bool = option(False, "write the key of every trained sample per rank to output_dir/ranks/ "
                                          "(audits the split across ranks and workers)")


@dataclasses.dataclass
class OptimOptions:
    lr: float = option(1e-4, "peak learning rate, reached at the end of warm-up")
    warmup_lr: float = option(1e-6, "learning rate at step 0; rises linearly to lr over warmup_steps")
    min_lr: float = option(8e-5, "learning rate the cosine reaches at max_steps")
    warmup_steps: int = option(2000, "linear warm-up steps", minimum=0)
    max_steps: int = option(200_000, "optimizer steps in total; the cosine spans them all (reference: 40 x 5000)")
    weight_decay: float = option(0.05, "AdamW weight decay on the aligner's matrices (biases and the norm get none)")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.999, "AdamW beta2")
    max_grad_norm: float | None = option(None, "clip the gradient norm to this; null: no clipping (the reference)")
    grad_accum: int = option(1, "micro-batches per optimizer step")


@dataclasses.dataclass
class RunOptions:
    output_dir: str = option("runs/thinkdiff-lvlm", "folder for checkpoints, logs and the exported aligner")
    seed: int = option(42, "seed for the aligner's init, the data order and the split points", minimum=0)
    mixed_precision: str = option("auto", "auto (bf16 on CUDA, none on CPU), bf16, fp16 or no")
    log_every: int = option(50, "steps between console log lines")
    eval_every: int = option(1000, "steps between held-out evaluations (0: only at the end)", minimum=0)
    save_every: int = option(1000, "steps between checkpoints (0: only at the end)", minimum=0)
    keep_last: int = option(3, "checkpoints kept; older ones are deleted")
    tensorboard: bool = option(False, "also log to TensorBoard under output_dir/tensorboard")
    resume: bool = option(False, "continue from the latest checkpoint in output_dir (same data order, optimizer, schedule)")
    show_samples: int = option(4, "decoded held-out samples printed at each evaluation", minimum=0)


@dataclasses.dataclass
class TrainConfig:
    """Everything `python -m train.align` reads."""

    model: ModelOptions = section(ModelOptions)
    data: DataOptions = section(DataOptions)
    optim: OptimOptions = section(OptimOptions)
    run: RunOptions = section(RunOptions)
