"""The load-time transformers check (ComfyUI owns transformers; requirements.txt does not list it)."""

from importlib import metadata

import pytest


@pytest.mark.parametrize("version", ["4.57.0", "4.57.6", "4.58.0.dev0", "5.0.0", "5.24.0", "10.1", "4.57.0rc1"])
def test_new_enough_versions_pass(environment, version):
    assert environment.transformers_problem(version) is None


@pytest.mark.parametrize("version", ["4.56.2", "4.50.3", "4.6.0", "3.5.1"])
def test_older_versions_get_a_message_with_the_fix(environment, version):
    message = environment.transformers_problem(version)
    assert f"but {version} is installed" in message and 'pip install "transformers>=4.57"' in message
    assert "restart ComfyUI" in message


def test_missing_transformers_is_named(environment):
    assert "not installed" in environment.transformers_problem(None)


def test_the_installed_transformers_passes(environment):
    assert environment.transformers_problem(metadata.version("transformers")) is None
    environment.require_transformers()  # raises ImportError where the check disagrees with the line above
