"""What `import thinkdiff_core` gives, and what it must not pull in."""

import dataclasses
import subprocess
import sys

import pytest

import thinkdiff_core
from thinkdiff_core.pipeline import ThinkDiffPipeline
from thinkdiff_core.vision import VisionEncoder


def test_the_package_exports_the_encoder_and_the_pipeline():
    assert thinkdiff_core.VisionEncoder is VisionEncoder and thinkdiff_core.ThinkDiffPipeline is ThinkDiffPipeline
    assert set(thinkdiff_core.__all__) >= {"VisionEncoder", "ThinkDiffPipeline", "VisionLanguageModel"}
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        thinkdiff_core.NoSuchThing


def test_importing_the_package_does_not_import_diffusers():
    """The nodes and training import thinkdiff_core; only the pipeline needs diffusers."""
    code = "import sys, thinkdiff_core; print('diffusers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_generation_settings_are_frozen():
    settings = thinkdiff_core.GenerationSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1
    assert dataclasses.replace(settings, seed=1).seed == 1 and settings.seed == 0
