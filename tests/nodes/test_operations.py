"""What the Reason, Encode Images and Conditioning nodes do, on a real tiny Qwen2-VL, a real tiny BLIP-2 vision
tower and real aligner files."""

import pytest
import torch

from thinkdiff_core import CLIP_RECIPE, GenerationSettings, load_aligner, merge_conditioning
from thinkdiff_core.images import tensor_to_pil
from thinkdiff_core.progress import cancellable
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
        on_token=cancellable(lambda: None, lambda done, total: progress.append((done, total))),
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
    on_token = cancellable(cancel_after_three, lambda done, total: reported.append(done))
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


def test_condition_passes_target_strength_and_budget(operations, official_aligner_files, tokens_64):
    aligner = load_aligner(official_aligner_files[64])
    mask = torch.tensor([[1] * 9 + [0] * 119])
    ltxv = [[torch.randn(1, 128, 4096), {"pooled_output": None, "attention_mask": mask}]]
    [[cond, extras]] = operations.condition(aligner, tokens_64, ltxv, "prepend", False, "ltxv", 0.5, 130)
    assert cond.shape == (1, 130, 4096) and extras["attention_mask"].tolist() == [[1] * 15 + [0] * 115]
    torch.testing.assert_close(cond[:, :6], 0.5 * aligner(tokens_64))
    with pytest.raises(ValueError, match="target is sd3 but the base conditioning has no pooled vector"):
        operations.condition(aligner, tokens_64, ltxv, "prepend", False, "sd3")


def test_condition_refuses_tokens_of_another_width_naming_both_sizes(operations, official_aligner_files, tokens_64):
    aligner = load_aligner(official_aligner_files[32])
    with pytest.raises(ValueError) as refused:
        operations.condition(aligner, tokens_64, flux_base(), "replace")
    message = str(refused.value)
    assert "hidden size 64" in message and "expects 32" in message


def noise_image_tensor(count: int, seed: int, size: tuple[int, int] = (48, 36)) -> torch.Tensor:
    """A ComfyUI IMAGE batch of random pictures, so every picture's tokens differ."""
    return torch.rand(count, *size, 3, generator=torch.Generator().manual_seed(seed))


def test_encode_images_puts_the_slots_pictures_in_order_in_one_row(operations, vision_encoder):
    first, second_and_third = noise_image_tensor(1, seed=1), noise_image_tensor(2, seed=2)
    tokens = operations.encode_images(vision_encoder, {"image1": second_and_third, "image0": first, "image2": None})
    per_image = vision_encoder.tokens_per_image
    assert per_image == 65 and tokens.token_recipe == CLIP_RECIPE
    assert tokens.features.shape == (1, 3 * per_image, vision_encoder.hidden_size)
    pictures = tensor_to_pil(first) + tensor_to_pil(second_and_third)
    for index, picture in enumerate(pictures):
        alone = vision_encoder.encode([picture]).features[0]
        torch.testing.assert_close(tokens.features[0, index * per_image:(index + 1) * per_image], alone)


def test_clip_conditioning_is_the_pictures_then_the_prompt(operations, vision_encoder, official_aligner_files):
    """The CLIP recipe: [aligned picture 1, aligned picture 2, the base prompt's T5 tokens], pooled and guidance kept."""
    aligner = load_aligner(official_aligner_files["clip"])
    assert aligner.info.variant == "clip"
    pictures = {"image0": noise_image_tensor(1, seed=3), "image1": noise_image_tensor(1, seed=4)}
    tokens = operations.encode_images(vision_encoder, pictures)
    base = flux_base()
    cond, extras = operations.condition(aligner, tokens, base, "prepend")[0]
    assert cond.shape == (1, 2 * 65 + 256, 4096)
    for index, slot in enumerate(("image0", "image1")):
        alone = operations.encode_images(vision_encoder, {"image0": pictures[slot]})
        torch.testing.assert_close(cond[:, index * 65:(index + 1) * 65], aligner.module(alone.features))
    torch.testing.assert_close(cond[:, 130:], base[0][0])
    assert extras["pooled_output"] is base[0][1]["pooled_output"] and extras["guidance"] == 3.5


def test_aligners_refuse_the_other_variants_tokens_naming_the_fix(operations, vision_encoder, official_aligner_files,
                                                                  tokens_64):
    clip_aligner, lvlm_aligner = load_aligner(official_aligner_files["clip"]), load_aligner(official_aligner_files[32])
    clip_tokens = operations.encode_images(vision_encoder, {"image0": noise_image_tensor(1, seed=5)})
    assert clip_tokens.hidden_size == lvlm_aligner.module.input_size  # only the recipe tells them apart
    with pytest.raises(ValueError, match=r"ThinkDiff-LVLM path .* ThinkDiff-CLIP aligner .* Load the LVLM aligner"):
        operations.condition(clip_aligner, tokens_64, flux_base(), "prepend")
    with pytest.raises(ValueError, match=r"ThinkDiff-CLIP path .* ThinkDiff-LVLM aligner .* Load the CLIP aligner"):
        operations.condition(lvlm_aligner, clip_tokens, flux_base(), "replace")


# --- working memory, the image-size cap and the VLM-family guard (issue 10) ---


def test_reason_hands_the_request_estimate_to_make_room_before_generating(operations, tiny_vlm, colour_images):
    from thinkdiff_core.memory import request_memory

    seen, steps = [], []
    tokens = operations.reason(tiny_vlm, {"image0": as_image_tensor(RED), "image1": as_image_tensor(GREEN)},
                               "red\ngreen\nyellow", "cobsat_reasoning", "", SHORT,
                               on_token=lambda done, total: steps.append(done), make_room=seen.append)
    prompt = cobsat_prompt(colour_images("red", "lime", size=(40, 40)), ["red", "green", "yellow"])
    assert seen == [request_memory(tiny_vlm, [prompt], SHORT.max_new_tokens)] and len(steps) == 6
    assert tokens.features.shape == (1, 6, tiny_vlm.hidden_size)


def test_a_refusing_make_room_stops_before_any_token(operations, tiny_vlm):
    def refuse(working):
        raise ValueError(f"does not fit: {working}")

    steps = []
    with pytest.raises(ValueError, match="does not fit: .* GiB \\(KV cache"):
        operations.reason(tiny_vlm, {"image0": as_image_tensor(RED)}, "red\nblue", "cobsat_reasoning", "", SHORT,
                          on_token=lambda done, total: steps.append(done), make_room=refuse)
    assert steps == []


def test_max_pixels_shrinks_big_pictures_before_the_vlm_sees_them(operations, tiny_vlm):
    """The tiny processor caps images at 4x4 merged patches itself, so compare what reaches it: a 224x224 picture
    capped at 56x56 pixels gives the 2x2 merged patches (4 image tokens) of a small image, not the processor's 16."""
    estimates = {}
    for cap in (0, 56 * 56):
        seen = []
        operations.reason(tiny_vlm, {"image0": as_image_tensor(RED, size=224)}, "red\nblue", "cobsat_reasoning", "",
                          SHORT, max_pixels=cap, make_room=seen.append)
        estimates[cap] = seen[0]
    assert estimates[56 * 56].vision == estimates[0].vision // 4 and estimates[56 * 56].kv_cache < estimates[0].kv_cache


def test_condition_refuses_another_vlm_familys_tokens_unless_allowed(operations, official_aligner_files,
                                                                     load_tiny_vlm, caplog):
    """The official-layout aligner says it was trained on Qwen2-VL-7B-Instruct; tiny Qwen2.5-VL tokens have its width."""
    qwen2_5 = load_tiny_vlm("qwen2_5_vl")
    tokens = operations.reason(qwen2_5, {"image0": as_image_tensor(RED)}, "red\nblue", "cobsat_reasoning", "", SHORT)
    aligner = load_aligner(official_aligner_files[64])
    with pytest.raises(ValueError, match="come from Qwen2.5-VL .* trained on Qwen2-VL .* allow_other_vlm"):
        operations.condition(aligner, tokens, flux_base(), "replace")
    with caplog.at_level("WARNING"):
        merged = operations.condition(aligner, tokens, flux_base(), "replace", allow_other_vlm=True)
    assert merged[0][0].shape == (1, 6, 4096) and "expect poor images" in caplog.text
