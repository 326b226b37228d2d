"""Turning what users hand us (files, PIL images in any mode, ComfyUI IMAGE tensors) into RGB PIL images.

Vision processors expect 8-bit RGB. Users have RGBA PNGs, grayscale scans and 16-bit images; those are
converted here, once, the same way for nodes, scripts and training. `save_image` writes results
atomically for the scripts.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from .files import write_atomic

ImageInput = Union[Image.Image, torch.Tensor, str, os.PathLike]
"""What the library accepts as an image: a PIL image, a ComfyUI IMAGE tensor, or a file path."""

BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited on white, as an image viewer shows them."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: alpha composited on white, 16/32-bit and float scaled to 0..255."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        # The mode's bit depth decides the scale, never the values: a dark 16-bit scan stays dark.
        # 32-bit "I" images are what Pillow makes of 16-bit data from older formats, so they read as 16-bit too.
        peak = 65535.0
        if image.mode == "F":
            peak = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def open_image(source: str | os.PathLike[str] | bytes) -> Image.Image:
    """Open an image file (or its bytes, e.g. a tar member) as RGB; a file that cannot be read gets a
    ValueError naming it."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        name = "image data" if isinstance(source, bytes) else repr(os.fspath(source))
        raise ValueError(f"Cannot read image {name}: {error}. Use a PNG, JPEG or WebP file.") from error


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """A ComfyUI IMAGE `[B, H, W, C]` float 0..1 (C = 1, 3 or 4) -> B RGB PIL images."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected an IMAGE tensor [batch, height, width, 1|3|4]; got shape {tuple(images.shape)}.")
    pixels = (images.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    return [to_rgb(Image.fromarray(p.squeeze(-1) if p.shape[-1] == 1 else p, mode=modes[p.shape[-1]])) for p in pixels]


def as_pil(image: ImageInput) -> Image.Image:
    """One image from a path, a PIL image or a single-image tensor, as RGB."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, torch.Tensor):
        converted = tensor_to_pil(image)
        if len(converted) != 1:
            raise ValueError(f"Expected one image, got a batch of {len(converted)}; pass the images one by one.")
        return converted[0]
    return open_image(image)


def as_pil_list(images: Sequence[ImageInput]) -> list[Image.Image]:
    """Paths, PIL images and ComfyUI IMAGE tensors -> RGB PIL images in order (a batch tensor counts as
    its images)."""
    return [picture for item in images
            for picture in (tensor_to_pil(item) if isinstance(item, torch.Tensor) else [as_pil(item)])]


def limit_pixels(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """`image` shrunk (aspect kept, Lanczos) to at most `max_pixels` pixels; unchanged if it is smaller or the
    limit is None/0. The VLM's processor then resizes within its own bounds: this cap is for users who wire
    in 12-megapixel photos, whose vision activations would otherwise take gigabytes."""
    if not max_pixels or image.width * image.height <= max_pixels:
        return image
    scale = (max_pixels / (image.width * image.height)) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def save_image(image: Image.Image, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write an image atomically, never replacing a file unless `overwrite` is set. The format follows the
    suffix (.png, .jpg, .webp); JPEGs at quality 95."""
    path = Path(path).expanduser()
    formats = Image.registered_extensions()
    if path.suffix.lower() not in formats:
        raise ValueError(f"Cannot tell the image format of {path.name}: use a .png, .jpg or .webp name.")
    image_format = formats[path.suffix.lower()]
    options = {"quality": 95} if image_format == "JPEG" else {}
    return write_atomic(path, lambda temporary: to_rgb(image).save(temporary, format=image_format, **options), overwrite)
