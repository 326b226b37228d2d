"""A small synthetic image-caption set: one coloured shape per image, captioned in words.

The demo, tests and benches need image-caption data that exists offline, is reproducible and is
learnable by tiny models in seconds: "a red star on a plain background" is all of that. Every image
is drawn from its index and a seed (position, size and rotation jitter), so two calls give the same
pixels and a held-out split is simply another seed.
"""

from __future__ import annotations

import json
import math
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]
"""The demo's vocabulary: every caption is one colour and one shape (also what the tiny tokenizers learn)."""
BACKGROUND = (128, 128, 128)
RGB = {
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "purple": (140, 40, 170), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (10, 10, 10),
}


@dataclass
class ShapeSample:
    key: str
    image: Image.Image
    caption: str
    colour: str
    shape: str


def caption_for(colour: str, shape: str) -> str:
    return f"a {colour} {shape} on a plain background"


def all_captions() -> list[str]:
    return [caption_for(c, s) for c in COLOURS for s in SHAPES]


def _polygon(cx: float, cy: float, radii: list[float], turn: float) -> list[tuple[float, float]]:
    step = 2 * math.pi / len(radii)
    return [(cx + r * math.cos(turn + i * step), cy + r * math.sin(turn + i * step)) for i, r in enumerate(radii)]


def draw_shape(shape: str, colour: str, size: int, rng: random.Random) -> Image.Image:
    """One shape of `colour` on a grey background, jittered in position, size and rotation."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    fill = RGB[colour]
    radius = size * rng.uniform(0.32, 0.36)
    cx = size / 2 + rng.uniform(-0.03, 0.03) * size
    cy = size / 2 + rng.uniform(-0.03, 0.03) * size
    turn = rng.uniform(-0.1, 0.1)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(radius * 0.3)))
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, [radius * 1.2] * 4, turn + math.pi / 4), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [radius * 1.1] * 3, turn - math.pi / 2), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [radius * 1.1, radius * 0.45] * 5, turn - math.pi / 2), fill=fill)
    elif shape == "cross":
        arm = radius * 0.35
        draw.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return image


def shape_samples(count: int, seed: int = 0, size: int = 112) -> list[ShapeSample]:
    """`count` samples cycling through every colour x shape pair, drawn reproducibly from `seed`."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    order = random.Random(seed).sample(range(len(pairs)), len(pairs))
    samples = []
    for index in range(count):
        colour, shape = pairs[order[index % len(pairs)]]
        rng = random.Random(zlib.crc32(f"{seed}:{index}".encode()))
        samples.append(ShapeSample(f"s{seed:03d}-{index:06d}", draw_shape(shape, colour, size, rng),
                                   caption_for(colour, shape), colour, shape))
    return samples


def write_image_folder(folder: str | Path, samples: list[ShapeSample]) -> Path:
    """Images as PNG files plus `captions.jsonl` ({"image": name, "caption": text} per line)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "captions.jsonl", "w") as lines:
        for sample in samples:
            name = f"{sample.key}.png"
            sample.image.save(folder / name)
            lines.write(json.dumps({"image": name, "caption": sample.caption}) + "\n")
    return folder


def write_webdataset(folder: str | Path, samples: list[ShapeSample], per_shard: int = 64) -> list[Path]:
    """Tar shards in the CC-SBU / LAION layout MiniGPT-4 documents: `key.jpg`, `key.txt`, `key.json`."""
    import io

    import webdataset as wds

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, len(samples), per_shard):
        path = folder / f"{start // per_shard:05d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for sample in samples[start:start + per_shard]:
                jpeg = io.BytesIO()
                sample.image.save(jpeg, format="JPEG", quality=95)
                writer.write({"__key__": sample.key, "jpg": jpeg.getvalue(), "txt": sample.caption,
                              "json": {"caption": sample.caption, "key": sample.key}})
        shards.append(path)
    return shards
