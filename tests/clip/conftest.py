"""ThinkDiff-CLIP fixtures: one tiny BLIP-2 folder (real 224px / patch-14 geometry) and its encoder per session."""

import numpy as np
import pytest
from PIL import Image

from thinkdiff_core.tiny import write_tiny_blip2
from thinkdiff_core.vision import VisionEncoder


@pytest.fixture(scope="session")
def blip2_dir(tmp_path_factory):
    return write_tiny_blip2(tmp_path_factory.mktemp("blip2") / "blip2-flan-t5-xxl")


@pytest.fixture(scope="session")
def vision_encoder(blip2_dir) -> VisionEncoder:
    return VisionEncoder.from_pretrained(blip2_dir, dtype="fp32", device="cpu")


@pytest.fixture
def noise_images():
    """Random RGB images of different sizes and aspect ratios, so every patch token differs."""

    def make(count: int, seed: int = 0) -> list[Image.Image]:
        rng = np.random.default_rng(seed)
        sizes = [(300, 200), (224, 224), (97, 161), (512, 384)]
        return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in
                (sizes[i % len(sizes)] for i in range(count))]

    return make
