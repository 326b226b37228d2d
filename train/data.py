"""Data for the training tools: image sources, the feature-shard format, and the resumable training stream.

Sources
- WebDataset tar shards in the CC-SBU / LAION layout MiniGPT-4 documents: per key an image
  (`.jpg`, `.png`, `.webp`) and a caption (`.txt`, or `.json` with a "caption" field).
- A folder of images with `captions.jsonl` (`{"image": "a.jpg", "caption": "..."}` per line; the
  Hugging Face imagefolder names `file_name`/`text` work too). Without the jsonl: every image file.
- Feature shards written by `train.precompute`: tar files whose samples hold `key.safetensors`
  (generated-token `features` [T, D] and `token_ids` [T]) and `key.json` (text, instruction, seed...).

The training stream is deterministic from (seed, rank, worker): shards are shuffled per epoch, split
across every (rank, worker) reader without duplicates, shuffled again through a buffer (per epoch,
so epochs never mix), and cut into batches. Resuming after N batches replays exactly the same stream
and drops the first N, so the data order after `--resume` is the order an unbroken run would see.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from braceexpand import braceexpand
from PIL import Image
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch.utils.data import IterableDataset, get_worker_info

from thinkdiff_core.images import open_image

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_FILES = ("captions.jsonl", "metadata.jsonl")
FEATURE_FORMAT = "thinkdiff-features"
MANIFEST = "manifest.json"
VLM_TOKENIZER_DIR = "vlm_tokenizer"
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
"""What opening a damaged or hostile image file raises: such images are skipped and counted, never fatal."""


def is_remote(spec: str) -> bool:
    return spec.startswith("pipe:") or "://" in spec


def expand_shards(spec: str, what: str = "shards") -> list[str]:
    """Tar shards named by a folder, a brace pattern (`dir/{000..009}.tar`) or a comma-separated list."""
    shards: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        path = Path(part).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.tar"))
            if not found:
                raise FileNotFoundError(f"{what}: the folder {path} holds no .tar shards.")
            shards += found
            continue
        for name in braceexpand(part):
            if not is_remote(name) and not Path(name).expanduser().is_file():
                raise FileNotFoundError(f"{what}: no shard at {name} (from {part!r}). Check the path or pattern.")
            shards.append(name if is_remote(name) else str(Path(name).expanduser()))
    if not shards:
        raise ValueError(f"{what}: no shards given; pass a folder, a brace pattern like dir/{{000000..000009}}.tar, "
                         f"or a comma-separated list.")
    return shards


def tar_samples(shard: str, handler: Callable[[Exception], bool] = wds.warn_and_continue) -> Iterator[dict[str, Any]]:
    """The raw samples (key -> bytes per extension) of one tar shard, in file order."""
    return wds.tarfile_to_samples(handler=handler)(iter([{"url": shard}]))


# ---------------------------------------------------------------------------------------------------
# Image sources (what train.precompute reads, and the CLIP variant's captions)


@dataclass
class ImageRecord:
    """One image of a source: decoded lazily, so a corrupt file fails where it can be counted."""

    key: str
    read: Callable[[], Image.Image]
    caption: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageUnit:
    """A unit of work: one tar shard, or one chunk of a folder's images (precompute's output shard, and a
    shard of the CLIP variant's training stream). `records` is a `functools.partial` of a module-level
    reader, so a unit pickles into DataLoader workers started with `spawn`."""

    index: int
    name: str
    records: Callable[[], Iterator[ImageRecord]]
    errors: list[str] = field(default_factory=list)  # unreadable tar members, filled while reading


def _caption_of(sample: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    meta: dict[str, Any] = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError):
            meta = {}
    if "txt" in sample:
        return sample["txt"].decode("utf-8", "replace").strip(), meta
    caption = meta.get("caption") if isinstance(meta, dict) else None
    return (str(caption) if caption is not None else None), meta if isinstance(meta, dict) else {}


def _tar_records(shard: str, errors: list[str]) -> Iterator[ImageRecord]:
    def note(error: Exception) -> bool:
        errors.append(f"{shard}: {error}")
        return True

    for sample in tar_samples(shard, handler=note):
        extension = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if extension is None:
            errors.append(f"{shard}: sample {sample.get('__key__')} has no image ({', '.join(IMAGE_EXTENSIONS)})")
            continue
        caption, meta = _caption_of(sample)
        data = sample[extension]
        yield ImageRecord(sample["__key__"], lambda data=data: open_image(data), caption, meta)


def _folder_entries(folder: Path) -> list[tuple[Path, str | None]]:
    for name in CAPTION_FILES:
        listing = folder / name
        if listing.is_file():
            entries = []
            root = folder.resolve()
            for number, line in enumerate(listing.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                relative = row.get("image", row.get("file_name"))
                if not isinstance(relative, str):
                    raise ValueError(f"{listing}:{number}: needs an \"image\" (or \"file_name\") entry; got {row}.")
                path = (folder / relative).resolve()
                if root not in path.parents:
                    raise ValueError(f"{listing}:{number}: {relative!r} points outside {folder}; keep images inside it.")
                entries.append((path, row.get("caption", row.get("text"))))
            return entries
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"{folder} has no captions.jsonl and no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return [(p, None) for p in images]


def _folder_records(root: Path, chunk: list[tuple[Path, str | None]]) -> Iterator[ImageRecord]:
    for file, caption in chunk:
        yield ImageRecord(str(file.relative_to(root)), lambda file=file: open_image(file), caption)


def image_units(spec: str, folder_chunk: int = 1000, what: str = "images") -> list[ImageUnit]:
    """The work units of an image source: one per tar shard, or per `folder_chunk` images of a folder.
    `what` names the source in error messages."""
    path = Path(spec).expanduser()
    if path.is_dir() and not list(path.glob("*.tar")):
        entries = _folder_entries(path)
        units = []
        for index, start in enumerate(range(0, len(entries), folder_chunk)):
            chunk = entries[start:start + folder_chunk]
            units.append(ImageUnit(index, f"{path.name}[{start}:{start + len(chunk)}]",
                                   functools.partial(_folder_records, path.resolve(), chunk)))
        return units
    units = []
    for index, shard in enumerate(expand_shards(spec, what)):
        unit = ImageUnit(index, shard, lambda: iter(()))
        unit.records = functools.partial(_tar_records, shard, unit.errors)
        units.append(unit)
    return units


def unit_records(unit: ImageUnit) -> Iterator[ImageRecord]:
    """The records of one unit: how the CLIP variant's training stream reads its shards."""
    return unit.records()


@dataclass
class CaptionedImage:
    """A decoded image-caption sample of the CLIP variant; `image` is None when the file could not be read."""

    key: str
    image: Image.Image | None
    caption: str | None


def decode_captioned_image(record: ImageRecord) -> CaptionedImage:
    """Open the record's image; an unreadable one is warned about and left out by the recipe, not fatal."""
    try:
        image = record.read()
    except UNREADABLE as error:
        warnings.warn(f"skipping unreadable image {record.key}: {error}", stacklevel=2)
        image = None
    return CaptionedImage(record.key, image, record.caption)


# ---------------------------------------------------------------------------------------------------
# Feature shards (what train.precompute writes and train.align reads)


@dataclass
class FeatureSample:
    key: str
    features: torch.Tensor  # [T, D]
    token_ids: torch.Tensor  # [T]
    meta: dict[str, Any]
    input_features: torch.Tensor | None = None  # [P, D]: the prompt tokens' states (`precompute --features input|both`)

    @property
    def length(self) -> int:
        return self.features.shape[0]


def encode_feature_sample(key: str, features: torch.Tensor, token_ids: torch.Tensor, meta: dict[str, Any],
                          input_features: torch.Tensor | None = None) -> dict:
    """A tar sample: the tensors as safetensors bytes (no pickle anywhere), the rest as JSON."""
    tensors = {"features": features.contiguous(), "token_ids": token_ids.to(torch.int64).contiguous()}
    if input_features is not None:
        tensors["input_features"] = input_features.contiguous()
    return {"__key__": key, "safetensors": save_tensors(tensors), "json": json.dumps(meta).encode()}


def decode_feature_sample(raw: dict[str, Any]) -> FeatureSample:
    tensors = load_tensors(raw["safetensors"])
    return FeatureSample(raw["__key__"], tensors["features"], tensors["token_ids"], json.loads(raw["json"]),
                         tensors.get("input_features"))


def read_manifest(spec: str) -> dict[str, Any]:
    """The manifest train.precompute wrote beside the shards (the folder of the first shard)."""
    folder = Path(expand_shards(spec, "features")[0]).parent
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {MANIFEST}; point data.train at a folder written by train.precompute.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FEATURE_FORMAT:
        raise ValueError(f"{path} is not a ThinkDiff feature manifest (format={manifest.get('format')!r}).")
    manifest["folder"] = str(folder)
    return manifest


def worker_batches_before(consumed: int, worker: int, workers: int) -> int:
    """How many of the first `consumed` batches came from `worker`: a DataLoader takes them round-robin."""
    return max(0, (consumed - worker + workers - 1) // workers)


class TrainingStream(IterableDataset):
    """An endless, deterministic stream of training batches for one rank (and its workers).

    `read(shard)` yields a shard's raw samples (tar members by default; the CLIP variant reads image
    units), `decode` turns one into a sample. `build_batch(samples, rng)` turns a list of decoded
    samples into a batch (the variant's random split lives there); its `rng` is seeded by the batch's
    position in this rank's stream, so the split points do not depend on which worker built the
    batch or on a restart.
    """

    def __init__(self, shards: list, decode: Callable[[Any], Any], usable: Callable[[Any], bool],
                 build_batch: Callable[[list, random.Random], dict], batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 1000, skip_batches: int = 0,
                 read: Callable[[Any], Iterable] = tar_samples) -> None:
        self.shards, self.decode, self.usable, self.build_batch = shards, decode, usable, build_batch
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle_buffer, self.skip_batches, self.read = shuffle_buffer, skip_batches, read

    def epoch(self, epoch: int, consumer: int, consumers: int) -> Iterator[dict]:
        """One epoch of a consumer's raw samples: whole shards when there are enough shards, else every
        consumers-th sample of every shard. Disjoint and complete across the consumers either way."""
        order = random.Random(f"{self.seed}:epoch:{epoch}").sample(self.shards, len(self.shards))
        if len(order) >= consumers:
            for shard in order[consumer::consumers]:
                yield from self.read(shard)
            return
        position = itertools.count()
        for shard in order:
            for raw in self.read(shard):
                if next(position) % consumers == consumer:
                    yield raw

    def _raw(self, consumer: int, consumers: int) -> Iterator[dict]:
        """Epoch after epoch, each shuffled through the buffer on its own (epochs never mix)."""
        rng = random.Random(f"{self.seed}:shuffle:{consumer}")
        for number in itertools.count():
            produced = 0
            samples = self.epoch(number, consumer, consumers)
            if self.shuffle_buffer > 1:
                samples = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples)
            for raw in samples:
                produced += 1
                yield raw
            if produced == 0:
                raise ValueError(f"rank {self.rank}: no samples in its part of {len(self.shards)} shard(s) "
                                 f"({consumers} readers); check the shards or use fewer processes/workers.")

    def _usable(self, samples: Iterator[Any], patience: int = 10_000) -> Iterator[Any]:
        """Drop samples the recipe cannot use; stop with a message if none ever is."""
        seen_usable, dropped = False, 0
        for sample in samples:
            if self.usable(sample):
                seen_usable = True
                yield sample
            elif not seen_usable:
                dropped += 1
                if dropped >= patience:
                    raise ValueError(f"rank {self.rank}: the first {patience} samples are all unusable for this recipe "
                                     f"(LVLM: fewer than 2 generated tokens; CLIP: no caption or an unreadable "
                                     f"image); check the data.")

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # A DataLoader takes batches round-robin from worker 0. After `skip_batches`, the next batch is due
        # from the reader that produced batch number skip_batches in the first run, so the workers swap roles.
        role = (worker + self.skip_batches) % workers
        consumer, consumers = self.rank * workers + role, self.world_size * workers
        samples = self._usable(map(self.decode, self._raw(consumer, consumers)))
        skip = worker_batches_before(self.skip_batches, role, workers)
        for local in itertools.count():
            chunk = list(itertools.islice(samples, self.batch_size))
            if local < skip:
                continue
            position = local * workers + role  # the batch's index in this rank's stream
            yield self.build_batch(chunk, random.Random(f"{self.seed}:split:{self.rank}:{position}"))
