"""Tiny FLUX folder, aligners, BLIP-2 folder and loaded ThinkDiffPipelines (LVLM and CLIP), shared by the pipeline
tests (session scope)."""

import pytest

from thinkdiff_core.pipeline import ThinkDiffPipeline
from thinkdiff_core.testing.tiny import TINY_BLIP2_VISION_WIDTH
from thinkdiff_core.testing.tiny_pipeline import write_tiny_aligner, write_tiny_flux
from thinkdiff_core.tokens import CLIP_RECIPE


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    return write_tiny_flux(tmp_path_factory.mktemp("flux") / "FLUX.1-dev-tiny")


@pytest.fixture(scope="session")
def tiny_aligner_path(tmp_path_factory, tiny_vlm):
    return write_tiny_aligner(tmp_path_factory.mktemp("aligner") / "thinkdiff_lvlm_tiny.safetensors",
                                   source_model_id=tiny_vlm.model_id, input_size=tiny_vlm.hidden_size)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_flux_dir, tiny_aligner_path, tiny_vlm) -> ThinkDiffPipeline:
    """Loaded through `from_pretrained` from the folders on disk (the shared tiny VLM is passed in loaded)."""
    return ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_aligner_path, tiny_vlm, dtype="fp32", device="cpu")


# --- ThinkDiff-CLIP: the shared tiny BLIP-2 (tests/conftest.py), a CLIP aligner 32 -> 64, the same tiny FLUX ---


@pytest.fixture(scope="session")
def tiny_clip_aligner_path(tmp_path_factory, blip2_dir):
    return write_tiny_aligner(tmp_path_factory.mktemp("clip-aligner") / "thinkdiff_clip_tiny.safetensors",
                              source_model_id=blip2_dir.name, input_size=TINY_BLIP2_VISION_WIDTH,
                              token_recipe=CLIP_RECIPE, seed=1)


@pytest.fixture(scope="session")
def tiny_clip_pipeline(tiny_flux_dir, tiny_clip_aligner_path, blip2_dir) -> ThinkDiffPipeline:
    """Loaded through `from_pretrained` from the files on disk: the aligner's metadata picks the CLIP variant."""
    return ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_clip_aligner_path, vision_encoder=blip2_dir,
                                             dtype="fp32", device="cpu")
