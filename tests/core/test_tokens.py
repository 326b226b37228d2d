"""The tokens container validates what it carries."""

import pytest
import torch

from thinkdiff_core.tokens import CLIP_RECIPE, LVLM_RECIPE, ThinkDiffTokens


def test_defaults_and_properties():
    tokens = ThinkDiffTokens(torch.zeros(2, 5, 8), "m", LVLM_RECIPE, texts=["a", "b"])
    assert tokens.lengths == [5, 5] and tokens.hidden_size == 8 and tokens.variant == "lvlm" and tokens.text == "a\nb"
    assert ThinkDiffTokens(torch.zeros(1, 65, 8), "m", CLIP_RECIPE).variant == "clip"
    moved = tokens.to(dtype=torch.bfloat16)
    assert moved.features.dtype == torch.bfloat16 and moved.texts == tokens.texts


@pytest.mark.parametrize("kwargs,message", [
    (dict(features=torch.zeros(5, 8)), r"\[batch, tokens, hidden\]"),
    (dict(features=torch.zeros(2, 5, 8), lengths=[5]), "do not fit"),
    (dict(features=torch.zeros(1, 5, 8), lengths=[6]), "do not fit"),
    (dict(features=torch.zeros(1, 5, 8), token_recipe="mystery"), "unknown token recipe 'mystery'"),
])
def test_bad_contents_are_refused(kwargs, message):
    arguments = dict(source_model_id="m", token_recipe=LVLM_RECIPE) | kwargs
    with pytest.raises(ValueError, match=message):
        ThinkDiffTokens(**arguments)
