"""Aligned features merged into ComfyUI-style FLUX conditioning."""

import pytest
import torch

from thinkdiff_core.conditioning import merge_conditioning


def flux_conditioning(batch=1, length=256, width=64, dtype=torch.float32, **extras):
    cond = torch.randn(batch, length, width, dtype=dtype)
    return [[cond, {"pooled_output": torch.randn(batch, 768, dtype=dtype), "guidance": 3.5, **extras}]]


def test_replace_is_the_reference_recipe_and_keeps_pooled_and_guidance():
    base = flux_conditioning(custom_key="kept")
    aligned = torch.randn(1, 128, 64)
    [[cond, extras]] = merge_conditioning(base, aligned, "replace")
    assert torch.equal(cond, aligned)
    assert extras["pooled_output"] is base[0][1]["pooled_output"] and extras["guidance"] == 3.5
    assert extras["custom_key"] == "kept"


@pytest.mark.parametrize("mode", ["prepend", "append"])
def test_prepend_and_append_order(mode):
    base = flux_conditioning(length=7)
    aligned = torch.randn(1, 5, 64)
    [[cond, _]] = merge_conditioning(base, aligned, mode)
    first, second = (aligned, base[0][0]) if mode == "prepend" else (base[0][0], aligned)
    assert torch.equal(cond, torch.cat([first, second], 1))


def test_inputs_are_not_modified():
    base = flux_conditioning()
    before = (base[0][0].clone(), dict(base[0][1]))
    merge_conditioning(base, torch.randn(1, 3, 64), "prepend")
    assert torch.equal(base[0][0], before[0]) and base[0][1] == before[1]


def test_every_entry_of_a_combined_conditioning_gets_the_tokens():
    base = flux_conditioning(length=4) + flux_conditioning(length=9)
    merged = merge_conditioning(base, torch.randn(1, 2, 64), "append")
    assert [c.shape[1] for c, _ in merged] == [6, 11]


def test_batch_broadcasting_both_ways():
    [[cond, extras]] = merge_conditioning(flux_conditioning(batch=1), torch.randn(3, 5, 64), "prepend")
    assert cond.shape == (3, 261, 64) and extras["pooled_output"].shape == (3, 768)
    [[cond, _]] = merge_conditioning(flux_conditioning(batch=2), torch.randn(1, 5, 64), "replace")
    assert cond.shape == (2, 5, 64)
    with pytest.raises(ValueError, match="batch of 2 .* batch of 3"):
        merge_conditioning(flux_conditioning(batch=2), torch.randn(3, 5, 64), "replace")


def test_dtype_and_device_follow_the_base():
    [[cond, _]] = merge_conditioning(flux_conditioning(dtype=torch.bfloat16), torch.randn(1, 5, 64), "prepend")
    assert cond.dtype == torch.bfloat16 and cond.device == torch.device("cpu")


def test_attention_mask_is_extended_for_the_new_tokens():
    base = flux_conditioning(length=4, attention_mask=torch.tensor([[1, 1, 0, 0]]))
    [[_, extras]] = merge_conditioning(base, torch.randn(1, 2, 64), "prepend")
    assert extras["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0]]
    [[_, extras]] = merge_conditioning(base, torch.randn(1, 2, 64), "replace")
    assert extras["attention_mask"].tolist() == [[1, 1]]


def test_width_mismatch_and_bad_mode_are_explained():
    with pytest.raises(ValueError, match="width 2048 .* width 4096. .*FLUX text encoder"):
        merge_conditioning(flux_conditioning(width=2048), torch.randn(1, 5, 4096))
    with pytest.raises(ValueError, match="Unknown mode 'insert'"):
        merge_conditioning(flux_conditioning(), torch.randn(1, 5, 64), "insert")
    with pytest.raises(ValueError, match="base conditioning is empty"):
        merge_conditioning([], torch.randn(1, 5, 64))
