"""ThinkDiff-CLIP's vision tower weights on disk: reading, converting and downloading BLIP-2's vision files.

Weights come from either
- a full BLIP-2 Hugging Face folder, or its Hub id (then only the files the tower needs are
  downloaded, see `download_vision_files`): only the `vision_model.*` tensors are read, only from the
  shards that hold them (per `model.safetensors.index.json`); the 11B-parameter language model is
  never opened, or
- a vision-only `.safetensors` written by `python -m thinkdiff_core.convert vision`, whose
  metadata carries the tower's config and the image preprocessing, so no folder is needed.

`safe_open` gives memory-mapped tensors: loading costs the vision tensors' size, not a shard's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from transformers import Blip2Config, Blip2VisionConfig
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .files import read_json_object, safetensors_format, write_safetensors_atomic
from .hub import download_file, model_id_of
from .tokens import CLIP_RECIPE

BLIP2_HUB_ID = "Salesforce/blip2-flan-t5-xxl"
"""The BLIP-2 whose vision tower ThinkDiff-CLIP was trained on."""
VISION_PREFIX = "vision_model."
"""Where a `Blip2ForConditionalGeneration` checkpoint keeps the vision tower's tensors."""
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
FORMAT_NAME = "thinkdiff-vision"
FORMAT_VERSION = "1"
BLIP2_MODEL_TYPE = "blip-2"
CONVERT_CHUNK_BYTES = 32 * 2**20

VISION_CONFIG_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                        "patch_size", "hidden_act", "layer_norm_eps", "qkv_bias")
"""The tower's architecture; what a converted file records so it loads without the folder."""

BLIP2_EVAL_PROCESSOR: dict[str, Any] = {
    "do_resize": True, "size": {"height": 224, "width": 224}, "resample": int(Image.Resampling.BICUBIC),
    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD),
}
"""BLIP-2's eval preprocessing (LAVIS `blip2_image_eval`, HF `Salesforce/blip2-flan-t5-xxl`'s processor)."""


@dataclass
class VisionWeights:
    """The vision tower's tensors (names without `vision_model.`), its config, and where they came from."""

    tensors: dict[str, torch.Tensor]
    config: Blip2VisionConfig
    processor_settings: dict[str, Any]
    model_id: str
    files_read: list[Path] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _vision_config(fields: dict[str, Any]) -> Blip2VisionConfig:
    return Blip2VisionConfig(**{k: fields[k] for k in VISION_CONFIG_FIELDS if k in fields})


def _processor_settings(folder: Path, image_size: int) -> dict[str, Any]:
    """The folder's `preprocessor_config.json` values for BLIP-2's processor fields; eval defaults otherwise."""
    settings = dict(BLIP2_EVAL_PROCESSOR, size={"height": image_size, "width": image_size})
    path = folder / "preprocessor_config.json"
    if path.is_file():
        found = json.loads(path.read_text())
        settings.update({k: found[k] for k in BLIP2_EVAL_PROCESSOR if k in found})
    return settings


def _shards_of_vision_tensors(folder: Path) -> dict[Path, list[str]]:
    """For each safetensors file of `folder` that holds `vision_model.*` tensors: their names."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        shards: dict[Path, list[str]] = {}
        for name, shard in weight_map.items():
            if name.startswith(VISION_PREFIX):
                shards.setdefault(folder / shard, []).append(name)
    elif (folder / SINGLE_FILE).is_file():
        with safe_open(str(folder / SINGLE_FILE), framework="pt") as handle:
            names = [k for k in handle.keys() if k.startswith(VISION_PREFIX)]
        shards = {folder / SINGLE_FILE: names} if names else {}
    elif any(folder.glob("*.bin")):
        raise ValueError(
            f"{folder} holds only PyTorch .bin weights; the vision tower is read from .safetensors files. Download "
            f"the folder's *.safetensors files and {INDEX_FILE} (Salesforce/blip2-flan-t5-xxl ships them)."
        )
    else:
        raise FileNotFoundError(f"{folder} has neither {INDEX_FILE} nor {SINGLE_FILE}; it is not a complete model folder.")
    if not shards:
        raise ValueError(
            f"{folder} has no vision tower tensors ({VISION_PREFIX}*). Point at a BLIP-2 folder such as "
            f"blip2-flan-t5-xxl, or at a vision file written by `python -m thinkdiff_core.convert vision`."
        )
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks the shard(s) {missing} that hold the vision tower: the download is incomplete.")
    return shards


def _read(path: Path, names: list[str], tensors: dict[str, torch.Tensor], device: torch.device | str | None,
          dtype: torch.dtype | None) -> None:
    """Read exactly `names` from one safetensors file into `tensors`, converted to `device`/`dtype`.

    `safe_open` tensors are views of one memory map per open file, and a page read stays resident
    until every view of that map is gone. Unconverted tensors ARE the weights (no copy); when a
    conversion copies them, the file is reopened every `CONVERT_CHUNK_BYTES` so at most that much of
    the source is resident beside the converted tensors (an fp32 tower loaded as bf16 peaks near the
    bf16 size, not fp32 + bf16).
    """
    pending = list(names)
    try:
        while pending:
            with safe_open(str(path), framework="pt") as handle:
                mapped = 0
                while pending and mapped < CONVERT_CHUNK_BYTES:
                    name = pending.pop(0)
                    source = handle.get_tensor(name)
                    tensor = source.to(device=device, dtype=dtype)
                    tensors[name[len(VISION_PREFIX):]] = tensor
                    if tensor.data_ptr() != source.data_ptr():
                        mapped += source.numel() * source.element_size()
                    del source
    except SafetensorError as error:
        raise ValueError(f"{path.name} could not be read as safetensors ({error}); the file is truncated or damaged. "
                         f"Download or convert it again.") from error


def _read_folder(folder: Path, device: torch.device | str | None, dtype: torch.dtype | None) -> VisionWeights:
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json, so it is not a Hugging Face model folder. Point at the "
                         f"blip2-flan-t5-xxl folder (with config.json and *.safetensors) or a converted vision file.")
    model_type = read_json_object(folder / "config.json").get("model_type")
    if model_type != BLIP2_MODEL_TYPE:
        raise ValueError(f"{folder.name} is a {model_type!r} model, not BLIP-2 ({BLIP2_MODEL_TYPE!r}). ThinkDiff-CLIP "
                         f"reads the vision tower of Salesforce/blip2-flan-t5-xxl.")
    config = Blip2Config.from_pretrained(folder).vision_config
    shards = _shards_of_vision_tensors(folder)
    tensors: dict[str, torch.Tensor] = {}
    for path, names in shards.items():
        _read(path, names, tensors, device, dtype)
    return VisionWeights(tensors, _vision_config(config.to_dict()), _processor_settings(folder, config.image_size),
                         model_id_of(folder), list(shards))


def _read_converted(path: Path, device: torch.device | str | None, dtype: torch.dtype | None) -> VisionWeights:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names = [k for k in handle.keys() if k.startswith(VISION_PREFIX)]
    except SafetensorError as error:
        raise ValueError(f"{path.name} could not be read as safetensors ({error}); the file is truncated or damaged.") from error
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path.name} is not a ThinkDiff vision file (metadata format={metadata.get('format')!r}, expected "
            f"{FORMAT_NAME!r}). Pass the BLIP-2 folder itself, or convert it with `python -m thinkdiff_core.convert "
            f"vision <blip2 folder> {path.stem}-vision.safetensors`."
        )
    missing = [k for k in ("vision_config", "image_processor") if k not in metadata]
    if missing or not names:
        raise ValueError(f"{path.name} is an incomplete ThinkDiff vision file (no {missing or 'vision tensors'}); "
                         f"convert the BLIP-2 folder again.")
    tensors: dict[str, torch.Tensor] = {}
    _read(path, names, tensors, device, dtype)
    return VisionWeights(tensors, _vision_config(json.loads(metadata["vision_config"])),
                         json.loads(metadata["image_processor"]), metadata.get("source_model_id", path.stem), [path])


def is_vision_source(path: str | os.PathLike[str]) -> bool:
    """Whether `read_vision_weights` takes `path` by its kind: a folder whose config.json says BLIP-2, or a
    converted vision file. Reads a config or a safetensors header only, so a loader can list folders cheaply."""
    path = Path(path)
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and config.get("model_type") == BLIP2_MODEL_TYPE
    return path.suffix.lower() == ".safetensors" and safetensors_format(path) == FORMAT_NAME


def read_vision_weights(path: str | os.PathLike[str], device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> VisionWeights:
    """The vision tower's tensors from a BLIP-2 folder (vision shards only) or a converted vision file.

    Without `device`/`dtype` the tensors stay memory-mapped as stored; with them, each is converted as read.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return _read_folder(path, device, dtype)
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise ValueError(f"{path.name}: a vision tower is a BLIP-2 folder or a converted .safetensors file, "
                             f"not {path.suffix or 'a file without extension'}.")
        return _read_converted(path, device, dtype)
    raise FileNotFoundError(f"No BLIP-2 folder or vision file at {path}. Put it under ComfyUI/models/thinkdiff/ or "
                            f"models/clip_vision/, or pass its full path.")


def vision_files_after_index(index: Path) -> list[str]:
    """What the tower is read from besides the shard index `index`: the preprocessing, only the shards the index
    names for `vision_model.*` tensors (the language model's, most of blip2-flan-t5-xxl, are never fetched), and
    config.json last, since a folder with it is what the vision loader lists as a BLIP-2 folder."""
    weight_map = read_json_object(index).get("weight_map", {})
    shards = sorted({shard for name, shard in weight_map.items() if name.startswith(VISION_PREFIX)})
    return ["preprocessor_config.json", *shards, "config.json"]


def download_vision_files(repo_id: str) -> Path:
    """Fetch from a Hub BLIP-2 repo only what the tower needs (`vision_files_after_index`), into the Hub cache; return
    the snapshot folder. Files already in the cache are not fetched again."""
    fix = (f"Download the repo's config.json, preprocessor_config.json, {INDEX_FILE} and the shards that hold "
           f"{VISION_PREFIX}* where you have access, and pass the folder's local path.")
    index = download_file(repo_id, INDEX_FILE, fix)
    for filename in vision_files_after_index(index):
        download_file(repo_id, filename, fix)
    return index.parent


def save_vision_weights(path: str | os.PathLike[str], weights: VisionWeights, overwrite: bool = False) -> Path:
    """Write the tower as one vision-only `.safetensors` (keys `vision_model.*`, config in metadata), atomically."""
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "source_model_id": weights.model_id,
        "vision_config": json.dumps({k: getattr(weights.config, k) for k in VISION_CONFIG_FIELDS}),
        "image_processor": json.dumps(weights.processor_settings),
        "token_recipe": CLIP_RECIPE,
    }
    tensors = {VISION_PREFIX + k: v.contiguous() for k, v in weights.tensors.items()}
    return write_safetensors_atomic(path, tensors, metadata, overwrite=overwrite)


def convert_blip2_vision(source: str | os.PathLike[str], destination: str | os.PathLike[str],
                         overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
    """BLIP-2 folder -> vision-only `.safetensors` (about 4 GB in fp32 for blip2-flan-t5-xxl, 2 GB in bf16)."""
    if not Path(source).expanduser().is_dir():
        raise ValueError(f"{source} is not a folder; pass the BLIP-2 model folder (with config.json).")
    destination = Path(destination).expanduser()
    if destination.exists() and not overwrite:  # before reading gigabytes
        raise FileExistsError(f"{destination} exists; pass overwrite=True (--overwrite) to replace it.")
    return save_vision_weights(destination, read_vision_weights(source, dtype=dtype), overwrite=overwrite)
