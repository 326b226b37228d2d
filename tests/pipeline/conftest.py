"""Tiny FLUX folder, aligner and a loaded ThinkDiffPipeline, shared by the pipeline tests (session scope)."""

import pytest

from thinkdiff_core.pipeline import ThinkDiffPipeline
from thinkdiff_core.tiny import write_tiny_flux, write_tiny_lvlm_aligner


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    return write_tiny_flux(tmp_path_factory.mktemp("flux") / "FLUX.1-dev-tiny")


@pytest.fixture(scope="session")
def tiny_aligner_path(tmp_path_factory, tiny_vlm):
    return write_tiny_lvlm_aligner(tmp_path_factory.mktemp("aligner") / "thinkdiff_lvlm_tiny.safetensors",
                                   source_model_id=tiny_vlm.model_id, input_size=tiny_vlm.hidden_size)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_flux_dir, tiny_aligner_path, tiny_vlm) -> ThinkDiffPipeline:
    """Loaded through `from_pretrained` from the folders on disk (the shared tiny VLM is passed in loaded)."""
    return ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_aligner_path, tiny_vlm, dtype="fp32", device="cpu")
