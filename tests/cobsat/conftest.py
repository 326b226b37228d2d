"""A synthetic CoBSAT checkout (dataset layout + a prompt list written out here), shared per session."""

import json

import pytest

from train.cobsat.tasks import PROMPT_LIST, write_synthetic_dataset

ENTRY_0 = {"x_list": [8, 7, 5, 9, 2, 3, 6, 1, 4, 0], "theta_list": [7, 6, 3, 4, 1, 0, 2, 5, 9, 8]}
"""The benchmark's first prompt-list entry (load_datasets/prompts_list_default.json)."""
ENTRY_1 = {"x_list": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "theta_list": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]}


@pytest.fixture(scope="session")
def cobsat_dir(tmp_path_factory):
    root = write_synthetic_dataset(tmp_path_factory.mktemp("cobsat"), num_prompts=2, size=8)
    (root / PROMPT_LIST).write_text(json.dumps([ENTRY_0, ENTRY_1]))
    return root
