"""Aligner files: our `.safetensors` format, the official `.pth` layout, and conversion between them.

Our format keeps the official tensor names (`mm_projector.0.weight` ...) so both layouts describe the
same tensors, and adds string metadata that says what the aligner reads: variant, source model id
and hidden size, output size, token recipe, and free-form provenance (JSON).

The official files are `torch.save` dicts `{"model": {mm_projector.*}, "optimizer", "config", ...}`.
They are read with `torch.load(weights_only=True)` only: a pickle that would run code is refused and
nothing in it is executed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .aligner import Aligner
from .families import check_family, family_from_id
from .files import SAFETENSORS_SUFFIXES, safetensors_format, write_safetensors_atomic
from .tokens import CLIP_RECIPE, LVLM_RECIPE, RECIPE_VARIANTS, ThinkDiffTokens

FORMAT_NAME = "thinkdiff-aligner"
FORMAT_VERSION = "1"
KEY_PREFIX = "mm_projector."
OFFICIAL_LVLM_SOURCE = "Qwen/Qwen2-VL-7B-Instruct"
OFFICIAL_CLIP_SOURCE = "Salesforce/blip2-flan-t5-xxl"
BLIP2_VISION_HIDDEN_SIZE = 1408
OFFICIAL_SUFFIXES = (".pth", ".pt", ".bin")


@dataclass
class AlignerInfo:
    """What an aligner was trained to read, and where it came from."""

    source_model_id: str
    token_recipe: str
    provenance: dict[str, Any] = field(default_factory=dict)
    source_family: str = ""
    """The VLM family trained on, as saved; `family` falls back to what `source_model_id` names."""

    @property
    def variant(self) -> str:
        return RECIPE_VARIANTS[self.token_recipe]

    @property
    def family(self) -> str:
        """The VLM family (`qwen2_vl`, ...) of an LVLM aligner ("" for CLIP or when unknown)."""
        if self.variant != "lvlm":
            return ""
        return self.source_family or family_from_id(self.source_model_id)


@dataclass
class LoadedAligner:
    """An aligner module with its metadata: the THINKDIFF_ALIGNER that nodes and scripts pass on."""

    module: Aligner
    info: AlignerInfo

    def check_tokens(self, tokens: ThinkDiffTokens, allow_other_vlm: bool = False) -> None:
        """Refuse tokens this aligner was not trained on, naming both sides and the fix; another VLM family's
        tokens only with `allow_other_vlm` (then with a warning), another checkpoint of its family with a warning."""
        if tokens.token_recipe != self.info.token_recipe:
            raise ValueError(
                f"These tokens come from the ThinkDiff-{tokens.variant.upper()} path ({tokens.token_recipe}, "
                f"{tokens.source_model_id}) but the aligner is a ThinkDiff-{self.info.variant.upper()} aligner "
                f"({self.info.token_recipe}, trained on {self.info.source_model_id}). Load the "
                f"{tokens.variant.upper()} aligner for these tokens."
            )
        if tokens.hidden_size != self.module.input_size:
            raise ValueError(
                f"Tokens have hidden size {tokens.hidden_size} ({tokens.source_model_id}) but the aligner expects "
                f"{self.module.input_size} (trained on {self.info.source_model_id}). Use the VLM the aligner was "
                f"trained for, or an aligner trained for {tokens.source_model_id}."
            )
        if tokens.variant == "lvlm":
            check_family(tokens.source_model_id, tokens.source_family or family_from_id(tokens.source_model_id),
                         self.info.source_model_id, self.info.family, allow_other_vlm)

    def __call__(self, tokens: ThinkDiffTokens, allow_other_vlm: bool = False) -> torch.Tensor:
        """Aligned features `[B, T, output_size]` in the aligner's dtype and device.

        Positions past a row's length (a batched row that stopped early) stay zero rather than
        becoming the aligner's image of a zero vector.
        """
        self.check_tokens(tokens, allow_other_vlm)
        weight = self.module[0].weight
        with torch.no_grad():
            aligned = self.module(tokens.features.to(device=weight.device, dtype=weight.dtype))
        for row, length in enumerate(tokens.lengths):
            aligned[row, length:] = 0
        return aligned


def expected_shapes(input_size: int, output_size: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{KEY_PREFIX}0.weight": (output_size, input_size),
        f"{KEY_PREFIX}0.bias": (output_size,),
        f"{KEY_PREFIX}2.weight": (output_size, output_size),
        f"{KEY_PREFIX}2.bias": (output_size,),
        f"{KEY_PREFIX}3.weight": (output_size,),
    }


def _check_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """Validate the five aligner tensors' names and shapes; return (input_size, output_size)."""
    first = f"{KEY_PREFIX}0.weight"
    missing = [k for k in expected_shapes(1, 1) if k not in shapes]
    if missing:
        raise ValueError(
            f"{path.name} is not a ThinkDiff aligner: missing tensors {missing} (found {sorted(shapes)[:8]}). "
            f"Pick an aligner file (thinkdiff_lvlm.pth, thinkdiff_clip.pth or one written by this pack)."
        )
    if len(shapes[first]) != 2:
        raise ValueError(f"{path.name}: {first} must be 2-D [output, input]; it has shape {shapes[first]}.")
    output_size, input_size = shapes[first]
    for key, want in expected_shapes(input_size, output_size).items():
        if tuple(shapes[key]) != want:
            raise ValueError(
                f"{path.name}: tensor {key} has shape {tuple(shapes[key])}, expected {want} for an aligner "
                f"{input_size} -> {output_size}. The file is damaged or not an aligner; re-download or re-export it."
            )
    return input_size, output_size


def _check_values(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Refuse tensors no aligner can hold: an integer dtype (a damaged or foreign file) or NaN/Inf weights,
    which would otherwise give a black image with no error."""
    for key in expected_shapes(1, 1):
        tensor = state[key]
        if not tensor.is_floating_point():
            raise ValueError(f"{path.name}: tensor {key} has dtype {str(tensor.dtype).removeprefix('torch.')}, expected "
                             f"a float type (float32, bfloat16 or float16). The file is not an aligner or is damaged; "
                             f"re-download or re-export it.")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{path.name}: tensor {key} holds {bad} NaN/Inf value(s); an aligner's weights must all be "
                             f"finite (a diverged training run writes such files). Use an earlier checkpoint or "
                             f"re-download the aligner.")


def _build(state: dict[str, torch.Tensor], input_size: int, output_size: int, info: AlignerInfo,
           device: torch.device | str, dtype: torch.dtype | None) -> LoadedAligner:
    """Build the module on the meta device and adopt the loaded tensors: no second copy in memory."""
    with torch.device("meta"):
        module = Aligner(input_size, output_size)
    tensors = {k[len(KEY_PREFIX):]: v.to(device=device, dtype=dtype) for k, v in state.items() if k.startswith(KEY_PREFIX)}
    module.load_state_dict(tensors, assign=True)
    module.eval().requires_grad_(False)
    return LoadedAligner(module, info)


def _validated_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Aligner file not found: {path}. Put it under ComfyUI/models/thinkdiff/ or pass its full path.")
    return path


def _names_aligner_tensors(path: Path) -> bool:
    """Whether a torch checkpoint's pickle names the aligner's tensors, read as bytes and never unpickled.

    Pickles store dict keys as plain strings, so an official aligner's `mm_projector.0.weight` shows in the
    archive's `data.pkl` (a few kB); a training `trainer.pt` (optimizer state) or another model's weights do not.
    """
    key = f"{KEY_PREFIX}0.weight".encode()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
                return any(key in archive.read(name) for name in pickles)
        with path.open("rb") as handle:  # the legacy torch.save format: the pickle comes first
            return key in handle.read(1 << 20)
    except (OSError, zipfile.BadZipFile):
        return False


def is_aligner_file(path: str | os.PathLike[str]) -> bool:
    """Whether this file looks like an aligner `load_aligner` takes: an official `.pth`-style checkpoint whose
    pickle names the aligner's tensors, or our `.safetensors` (by its metadata). Reads only headers."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in OFFICIAL_SUFFIXES:
        return _names_aligner_tensors(path)
    return suffix in SAFETENSORS_SUFFIXES and safetensors_format(path) == FORMAT_NAME


def load_aligner(path: str | os.PathLike[str], device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> LoadedAligner:
    """Load our `.safetensors` or an official `.pth`, validating every shape before use."""
    path = _validated_path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return _load_safetensors(path, device, dtype)
    if path.suffix.lower() in OFFICIAL_SUFFIXES:
        return _load_official(path, device, dtype)
    raise ValueError(
        f"{path.name}: unknown aligner file type {path.suffix!r}; expected one of "
        f"{SAFETENSORS_SUFFIXES + OFFICIAL_SUFFIXES}."
    )


def _load_safetensors(path: Path, device: torch.device | str, dtype: torch.dtype | None) -> LoadedAligner:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
            input_size, output_size = _check_shapes(path, shapes)
            state = {k: handle.get_tensor(k) for k in expected_shapes(input_size, output_size)}
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path.name} could not be read as safetensors ({error}); the file is truncated or damaged. "
            f"Download or export it again."
        ) from error
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path.name} is a safetensors file but not a ThinkDiff aligner (metadata format="
            f"{metadata.get('format')!r}, expected {FORMAT_NAME!r})."
        )
    for key, actual in (("source_hidden_size", input_size), ("output_size", output_size)):
        written = metadata.get(key, str(actual))
        if not written.isdigit():
            raise ValueError(f"{path.name}: metadata entry {key} is {written!r}, expected a whole number ({actual}, "
                             f"what the tensors have). Re-export the aligner, or fix the entry.")
        if int(written) != actual:
            raise ValueError(f"{path.name}: metadata says {key}={written} but the tensors have {actual}.")
    recipe = metadata.get("token_recipe", "")
    if recipe not in RECIPE_VARIANTS:
        raise ValueError(f"{path.name}: unknown token_recipe {recipe!r}; known: {sorted(RECIPE_VARIANTS)}.")
    provenance_text = metadata.get("provenance", "{}")
    try:
        provenance = json.loads(provenance_text)
    except json.JSONDecodeError:
        provenance = None
    if not isinstance(provenance, dict):
        raise ValueError(f"{path.name}: metadata entry provenance is {provenance_text[:80]!r}, expected a JSON object. "
                         f"Re-export the aligner, or fix the entry.")
    info = AlignerInfo(metadata.get("source_model_id", "unknown"), recipe, provenance,
                       source_family=metadata.get("source_family", ""))
    _check_values(path, state)
    return _build(state, input_size, output_size, info, device, dtype)


OFFICIAL_SOURCE_HINT = "Download the real file from Hugging Face Mifucius/ThinkDiff (or export your own aligner again)."

_NOT_A_CHECKPOINT = (
    (b"version https://git-lfs", "a Git LFS pointer (a text stub that stands for the real file), not the checkpoint; "
                                 "run `git lfs pull` in the clone it came from, or"),
    (b"<!doctype html", "a web page (HTML), not a checkpoint: a download saved a login or error page;"),
    (b"<html", "a web page (HTML), not a checkpoint: a download saved a login or error page;"),
)


def _refuse_non_checkpoint(path: Path) -> None:
    """Name what a file that cannot be a torch checkpoint actually is, before torch tries to unpickle it."""
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head:
        raise ValueError(f"{path.name} is empty (0 bytes): the download or copy did not finish. {OFFICIAL_SOURCE_HINT}")
    start = head.lstrip().lower()
    for prefix, what in _NOT_A_CHECKPOINT:
        if start.startswith(prefix):
            raise ValueError(f"{path.name} is {what} {OFFICIAL_SOURCE_HINT[0].lower()}{OFFICIAL_SOURCE_HINT[1:]}")


def read_official_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """`torch.load` with `weights_only=True` (memory-mapped when possible), with errors a user can act on."""
    path = _validated_path(path)
    _refuse_non_checkpoint(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) torch.save format
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", str(error))
        reason = found.group(0) if found else "not plain tensors"
        raise ValueError(
            f"Refusing to load {path.name}: it holds Python objects or code that a weights-only load does not allow "
            f"({reason}). Nothing in it was executed. Official ThinkDiff checkpoints "
            f"hold only tensors; get the file from the official source (Mifucius/ThinkDiff)."
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"{path.name} could not be read as a PyTorch checkpoint ({str(error).splitlines()[0][:200]}); the file "
            f"is truncated or damaged. Download it again."
        ) from error


def _official_info(path: Path, checkpoint: dict[str, Any], input_size: int) -> AlignerInfo:
    """Infer what an official checkpoint reads from its training config (and its input width)."""
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    model_config = config.get("model", {}) if isinstance(config.get("model"), dict) else {}
    provenance = {"converted_from": path.name, "official_arch": model_config.get("arch", "unknown")}
    vlm_id = model_config.get("mllama_pretrained_model_name_or_path")
    if vlm_id:
        return AlignerInfo(str(vlm_id), LVLM_RECIPE, provenance)
    if "blip" in str(model_config.get("arch", "")) or input_size == BLIP2_VISION_HIDDEN_SIZE:
        return AlignerInfo(str(model_config.get("blip2_pretrained_model_name_or_path", OFFICIAL_CLIP_SOURCE)),
                           CLIP_RECIPE, provenance)
    return AlignerInfo(OFFICIAL_LVLM_SOURCE if input_size == 3584 else "unknown", LVLM_RECIPE, provenance)


def _load_official(path: Path, device: torch.device | str, dtype: torch.dtype | None) -> LoadedAligner:
    checkpoint = read_official_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path.name}: expected a dict checkpoint with a 'model' entry, got {type(checkpoint).__name__}.")
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for k, v in state.items() if k.startswith(KEY_PREFIX)):
        raise ValueError(f"{path.name}: its 'model' entry is not a dict of tensors; not an official ThinkDiff checkpoint.")
    input_size, output_size = _check_shapes(path, {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)})
    _check_values(path, state)
    return _build(state, input_size, output_size, _official_info(path, checkpoint, input_size), device, dtype)


def save_aligner(path: str | os.PathLike[str], aligner: LoadedAligner, overwrite: bool = False) -> Path:
    """Write our `.safetensors` format atomically (temp file, then rename); never overwrite unasked."""
    module, info = aligner.module, aligner.info
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "variant": info.variant,
        "source_model_id": info.source_model_id,
        "source_hidden_size": str(module.input_size),
        "output_size": str(module.output_size),
        "token_recipe": info.token_recipe,
        "provenance": json.dumps(info.provenance, sort_keys=True),
    }
    if info.source_family:
        metadata["source_family"] = info.source_family
    tensors = {KEY_PREFIX + k: v.detach().contiguous() for k, v in module.state_dict().items()}
    return write_safetensors_atomic(path, tensors, metadata, overwrite=overwrite)


def convert_official(source: str | os.PathLike[str], destination: str | os.PathLike[str],
                     overwrite: bool = False) -> Path:
    """Write an official `.pth` aligner as our `.safetensors` (same tensors, same dtype, plus metadata)."""
    return save_aligner(destination, load_aligner(source), overwrite=overwrite)
