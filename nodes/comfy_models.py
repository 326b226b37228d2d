"""ComfyUI's side of our models: the model folders they are listed from, and its memory manager.

The VLM (a 7B model) or the vision tower and FLUX take turns on the GPU: each is wrapped in a ModelPatcher, so
`load_models_gpu` moves it to the GPU when a ThinkDiff node needs it (offloading others if room is
short) and ComfyUI offloads it again when FLUX needs the room. ModelPatcher cannot own a transformers
model directly (its read-only `.device` property), so it owns a plain container module instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import comfy.model_management as model_management
import comfy.utils
import folder_paths
import torch
from comfy.model_patcher import ModelPatcher

from ..thinkdiff_core import VisionLanguageModel, downloads
from ..thinkdiff_core.memory import WorkingMemory, fit_error
from ..thinkdiff_core.precision import census, weight_bytes
from ..thinkdiff_core.progress import cancellable
from .model_folders import (ALIGNER_FOLDER_KEY, ALIGNER_SUFFIXES, VISION_FOLDER_KEYS, VLM_FOLDER_KEYS,
    find_aligner_files, find_model_folders, find_vision_models, resolve_aligner_file, resolve_vision_model,
    resolve_vlm_folder)

Wrapped = TypeVar("Wrapped")


def _register(key: str, extensions: set[str] | None) -> None:
    """Add models/<key> to ComfyUI's folder list, keeping paths extra_model_paths.yaml already gave the key.

    `extensions` None keeps whatever filter the key has (another pack may list its own files there).
    """
    default = os.path.join(folder_paths.models_dir, key)
    paths, known = folder_paths.folder_names_and_paths.get(key, ([], set()))
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[key] = (paths, set(known) | extensions if extensions is not None else known)


def register_model_folders() -> None:
    """models/vlm, models/LLM, models/thinkdiff (aligner suffixes) and ComfyUI's own clip_vision (its filter kept)."""
    for key in dict.fromkeys((*VLM_FOLDER_KEYS, *VISION_FOLDER_KEYS)):
        _register(key, set(ALIGNER_SUFFIXES) if key == ALIGNER_FOLDER_KEY else None)


@dataclass(frozen=True)
class Loadable:
    """What one loader lists and loads: the entries found under its ComfyUI folder keys, then the download offers."""

    keys: tuple[str, ...]
    catalog: tuple[downloads.KnownModel, ...]
    find: Callable[[list[str]], list[str]]
    resolve: Callable[[list[str], str], Path]

    def roots(self) -> list[str]:
        return list(dict.fromkeys(path for key in self.keys for path in folder_paths.get_folder_paths(key)))

    def options(self) -> list[str]:
        return downloads.offered(self.catalog, self.find(self.roots()))

    def path(self, name: str) -> str:
        """The picked entry on disk: a download entry is fetched into the first folder ComfyUI has for its key (the
        node's progress bar follows the bytes and Cancel stops it), any other name is resolved under the roots."""
        known = downloads.picked(self.catalog, name)
        if known is None:
            return str(self.resolve(self.roots(), name))
        bar = comfy.utils.ProgressBar(1)
        report = cancellable(model_management.throw_exception_if_processing_interrupted, bar.update_absolute)
        return str(downloads.download(known, folder_paths.get_folder_paths(known.folder_key)[0], report))


VLM_FOLDERS = Loadable(VLM_FOLDER_KEYS, downloads.VLMS, find_model_folders, resolve_vlm_folder)
VISION_MODELS = Loadable(VISION_FOLDER_KEYS, downloads.VISION_MODELS, find_vision_models, resolve_vision_model)
ALIGNER_FILES = Loadable((ALIGNER_FOLDER_KEY,), downloads.ALIGNERS, find_aligner_files, resolve_aligner_file)
"""Aligners only: models/thinkdiff/ may also hold BLIP-2 folders and vision files, which the aligner loader skips."""


class ThinkDiffModel(torch.nn.Module):
    """A plain module owning the real one, so ModelPatcher can set its bookkeeping attributes on it."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.inner = module


class ManagedModel(Generic[Wrapped]):
    """A library object (VLM, vision encoder, aligner) whose weights ComfyUI's memory manager moves between devices.

    `load_device` defaults to ComfyUI's device. The patcher is told the bytes the weights really hold
    (ComfyUI would count an fp8 tensor subclass at its compute dtype's size). `.model` is the patcher's
    module, as on ComfyUI's own models, which its model list and the common "unload model" nodes read.
    """

    def __init__(self, wrapped: Wrapped, module: torch.nn.Module, load_device: torch.device | None = None) -> None:
        self.wrapped = wrapped
        load_device = load_device or model_management.get_torch_device()
        offload_device = torch.device("cpu") if load_device.type == "cpu" else model_management.unet_offload_device()
        self.patcher = ModelPatcher(ThinkDiffModel(module), load_device=load_device, offload_device=offload_device,
                                    size=weight_bytes(module))

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model

    def ready(self, memory_required: int = 0) -> Wrapped:
        """Put the model on its compute device (ComfyUI frees room for it and `memory_required` bytes of working
        memory first, offloading other models) and return the library object.

        A transformers model cannot run half on the GPU, so it is loaded whole; the final `.to` also moves
        parameter-free modules' buffers (rotary tables), which ModelPatcher moves only with parameters.
        """
        model_management.load_models_gpu([self.patcher], memory_required=memory_required, force_full_load=True)
        self.patcher.model.to(self.patcher.load_device)
        return self.wrapped


class ManagedVLM(ManagedModel[VisionLanguageModel]):
    """The VLM, which also checks that a generation fits the card before anything moves."""

    def make_room(self, working: WorkingMemory) -> None:
        """Refuse a generation whose weights plus `working` memory cannot fit the load device even with every other
        model offloaded (the message names both and the precision that would fit); else load the VLM, telling
        ComfyUI the working memory so it offloads FLUX or others first."""
        room = device_room(self.patcher.load_device)
        if room is not None:
            problem = fit_error(self.patcher.model_size(), working, room, self.wrapped.precision, census(self.wrapped.model))
            if problem:
                raise ValueError(problem)
        self.ready(working.total)


def device_options() -> list[str]:
    """The VLM loader's device choices: ComfyUI's own, the CPU, and each CUDA device (for two-GPU machines)."""
    return ["default", "cpu", *(f"cuda:{index}" for index in range(torch.cuda.device_count()))]


def load_device(choice: str) -> torch.device:
    return model_management.get_torch_device() if choice == "default" else torch.device(choice)


def device_room(device: torch.device) -> int | None:
    """Bytes models and computation may take on `device` with everything else offloaded (None on the CPU)."""
    if device.type == "cpu":
        return None
    return model_management.get_total_memory(device) - model_management.extra_reserved_memory()
