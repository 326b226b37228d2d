"""The transformers checks: the pack's own (ComfyUI's floor, at load) and each VLM family's (when it is loaded)."""

from importlib import metadata

import pytest
from packaging.version import Version

from thinkdiff_core.families import FAMILIES, MINIMUM_TRANSFORMERS, check_transformers
from thinkdiff_core.precision import MissingDependency
from thinkdiff_core.vlm import VisionLanguageModel


@pytest.mark.parametrize("version", ["4.50.3", "4.51.0", "4.56.2", "4.57.0rc1", "5.24.0", "10.1"])
def test_comfyuis_floor_is_the_packs(environment, version):
    assert environment.transformers_problem(version) is None


@pytest.mark.parametrize("version", ["4.50.2", "4.49.0", "4.6.0", "3.5.1", "4.50.3.dev0"])
def test_older_versions_get_a_message_with_the_fix(environment, version):
    message = environment.transformers_problem(version)
    assert f"but {version} is installed" in message and 'pip install "transformers>=4.50.3"' in message
    assert "restart ComfyUI" in message


def test_missing_transformers_is_named(environment):
    assert "not installed" in environment.transformers_problem(None)


def test_the_installed_transformers_passes(environment):
    assert environment.transformers_problem(metadata.version("transformers")) is None
    environment.require_transformers()  # raises ImportError where the check disagrees with the line above


def test_every_family_has_a_floor_no_lower_than_the_packs(environment):
    assert set(MINIMUM_TRANSFORMERS) == set(FAMILIES)
    assert all(Version(floor) >= Version(environment.MINIMUM_TRANSFORMERS) for floor in MINIMUM_TRANSFORMERS.values())


@pytest.mark.parametrize("family, installed, refused", [
    ("qwen3_vl", "4.56.2", True), ("qwen3_vl", "4.57.0", False), ("qwen2_vl", "4.57.6", False),
    ("qwen2_5_vl", "4.55.4", True), ("qwen2_vl", "4.50.3", True), ("qwen2_vl", "5.0.0", False),
])
def test_each_family_is_checked_against_its_own_floor(family, installed, refused):
    if not refused:
        check_transformers(family, installed)
        return
    with pytest.raises(MissingDependency) as error:
        check_transformers(family, installed)
    message = str(error.value)
    assert f"{FAMILIES[family]} models need transformers >= {MINIMUM_TRANSFORMERS[family]}, but {installed}" in message
    assert f'pip install "transformers>={MINIMUM_TRANSFORMERS[family]}"' in message


def test_a_vlm_folder_is_checked_before_transformers_reads_it(tiny_vlm_dirs, monkeypatch):
    """The loader refuses a family the installed transformers is too old for, naming it, before loading weights."""
    monkeypatch.setitem(MINIMUM_TRANSFORMERS, "qwen2_vl", "99.0")
    with pytest.raises(MissingDependency, match=r"Qwen2-VL models need transformers >= 99\.0"):
        VisionLanguageModel.from_pretrained(tiny_vlm_dirs("qwen2_vl"))
