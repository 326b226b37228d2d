"""ThinkDiff-CLIP fixtures (the tiny BLIP-2 folder and its encoder, `blip2_dir` and `vision_encoder`, are
session fixtures in tests/conftest.py, shared with the node tests)."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def noise_images():
    """Random RGB images of different sizes and aspect ratios, so every patch token differs."""

    def make(count: int, seed: int = 0) -> list[Image.Image]:
        rng = np.random.default_rng(seed)
        sizes = [(300, 200), (224, 224), (97, 161), (512, 384)]
        return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in
                (sizes[i % len(sizes)] for i in range(count))]

    return make
