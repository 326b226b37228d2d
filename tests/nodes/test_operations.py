"""What the Reason and Conditioning nodes do, run on a real tiny Qwen2-VL and real aligner files."""

import pytest
import torch

from thinkdiff_core import GenerationSettings, load_aligner, merge_conditioning
from thinkdiff_core.prompts import cobsat_prompt

SHORT = GenerationSettings(seed=3, max_new_tokens=6, min_new_tokens=6)


def as_image_tensor(*colours: tuple[float, float, float], size: int = 40) -> torch.Tensor:
    """A ComfyUI IMAGE batch [B, H, W, 3] of flat colours."""
    return torch.stack([torch.tensor(c).expand(size, size, 3) for c in colours]).float()


RED, GREEN, BLUE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def test_ordered_images_follows_slot_numbers_and_skips_empty_slots(operations):
    a, b, c = as_image_tensor(RED), as_image_tensor(GREEN), as_image_tensor(BLUE)
    ordered = operations.ordered_images({"image10": c, "image2": b, "image0": a, "image3": None})
    assert [t.data_ptr() for t in ordered] == [a.data_ptr(), b.data_ptr(), c.data_ptr()]


def test_reason_matches_a_bare_generate_call_and_reports_every_token(operations, tiny_vlm, colour_images):
    progress = []
    tokens = operations.reason(
        tiny_vlm, {"image1": as_image_tensor(GREEN), "image0": as_image_tensor(RED)}, "red\n\ngreen\n yellow ",
        "cobsat_reasoning", "", SHORT,
        on_token=operations.token_callback(lambda: None, lambda done, total: progress.append((done, total))),
    )
    bare = tiny_vlm.generate([cobsat_prompt(colour_images("red", "lime", size=(40, 40)), ["red", "green", "yellow"])], SHORT)
    assert progress == [(i, 6) for i in range(1, 7)]
    assert tokens.features.shape == (1, 6, tiny_vlm.hidden_size)
    torch.testing.assert_close(tokens.features, bare.features)
    assert tokens.texts == bare.texts and tokens.text == bare.texts[0]


def test_a_batch_in_one_slot_counts_as_that_many_pictures(operations, tiny_vlm):
    images = {"image0": as_image_tensor(RED, GREEN)}
    tokens = operations.reason(tiny_vlm, images, "red\ngreen\nyellow", "cobsat_reasoning", "", SHORT)
    assert tokens.features.shape[1] == 6
    with pytest.raises(ValueError, match="3 words for 2 images, got 2"):
        operations.reason(tiny_vlm, images, "red\ngreen", "cobsat_reasoning", "", SHORT)


def test_compose_and_custom_presets_reach_the_vlm(operations, tiny_vlm):
    images = {"image0": as_image_tensor(RED), "image1": as_image_tensor(BLUE)}
    composed = operations.reason(tiny_vlm, images, "a cat\na hat\nthe cat in the hat", "compose", "", SHORT)
    custom = operations.reason(tiny_vlm, images, "", "custom", "Describe both pictures as one.", SHORT)
    assert composed.features.shape == custom.features.shape == (1, 6, tiny_vlm.hidden_size)
    with pytest.raises(ValueError, match="custom preset needs an instruction"):
        operations.reason(tiny_vlm, images, "", "custom", "   ", SHORT)


class Cancelled(Exception):
    pass


def test_cancel_stops_generation_between_tokens(operations, tiny_vlm):
    reported = []

    def cancel_after_three() -> None:
        if len(reported) == 3:
            raise Cancelled

    settings = GenerationSettings(seed=0, max_new_tokens=50, min_new_tokens=50)
    on_token = operations.token_callback(cancel_after_three, lambda done, total: reported.append(done))
    with pytest.raises(Cancelled):
        operations.reason(tiny_vlm, {"image0": as_image_tensor(RED)}, "red\nblue", "cobsat_reasoning", "", settings, on_token)
    assert reported == [1, 2, 3]


@pytest.fixture(scope="module")
def tokens_64(operations, tiny_vlm):
    return operations.reason(tiny_vlm, {"image0": as_image_tensor(RED)}, "red\nblue", "cobsat_reasoning", "", SHORT)


def flux_base(length: int = 256, batch: int = 1) -> list:
    return [[torch.randn(batch, length, 4096), {"pooled_output": torch.randn(batch, 768), "guidance": 3.5}]]


def test_condition_replaces_the_base_tokens_and_keeps_pooled_and_guidance(operations, official_aligner_files, tokens_64):
    aligner = load_aligner(official_aligner_files[64])
    base = flux_base()
    merged = operations.condition(aligner, tokens_64, base, "replace")
    cond, extras = merged[0]
    assert cond.shape == (1, 6, 4096)
    torch.testing.assert_close(cond, aligner.module(tokens_64.features))
    assert extras["pooled_output"] is base[0][1]["pooled_output"] and extras["guidance"] == 3.5
    assert base[0][0].shape == (1, 256, 4096)  # the cached input is untouched


@pytest.mark.parametrize("mode, length", [("prepend", 262), ("append", 262)])
def test_condition_prepends_or_appends(operations, official_aligner_files, tokens_64, mode, length):
    aligner = load_aligner(official_aligner_files[64])
    base = flux_base()
    merged = operations.condition(aligner, tokens_64, base, mode)
    expected = merge_conditioning(base, aligner(tokens_64), mode)
    assert merged[0][0].shape == (1, length, 4096)
    torch.testing.assert_close(merged[0][0], expected[0][0])


def test_condition_refuses_tokens_of_another_width_naming_both_sizes(operations, official_aligner_files, tokens_64):
    aligner = load_aligner(official_aligner_files[32])
    with pytest.raises(ValueError) as refused:
        operations.condition(aligner, tokens_64, flux_base(), "replace")
    message = str(refused.value)
    assert "hidden size 64" in message and "expects 32" in message
