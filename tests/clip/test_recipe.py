"""The ThinkDiff-CLIP token recipe against a computation done by hand on a tiny Blip2VisionModel."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from thinkdiff_core.tokens import CLIP_RECIPE
from thinkdiff_core.vision import clip_recipe_tokens

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def blip2_eval_pixels(image: Image.Image) -> torch.Tensor:
    """LAVIS `blip2_image_eval` by hand: 224x224 bicubic resize, to 0..1, CLIP mean/std."""
    array = np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy((array - CLIP_MEAN) / CLIP_STD).permute(2, 0, 1)


def test_preprocessing_is_blip2_eval(vision_encoder, noise_images):
    images = noise_images(3)
    expected = torch.stack([blip2_eval_pixels(im) for im in images])
    assert torch.allclose(vision_encoder.preprocess(images), expected, atol=1e-6)


def test_tokens_match_hand_computation(vision_encoder, noise_images):
    images = noise_images(3, seed=1)
    tokens = vision_encoder.encode_each(images)
    assert tokens.token_recipe == CLIP_RECIPE and tokens.variant == "clip"
    assert tuple(tokens.features.shape) == (3, 65, vision_encoder.hidden_size)

    model = vision_encoder.model
    pixels = torch.stack([blip2_eval_pixels(im) for im in images])
    with torch.no_grad():
        blocks = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]  # LAVIS visual_encoder
        hidden = model.post_layernorm(blocks)  # LAVIS ln_vision
    assert hidden.shape[1] == 1 + 16 * 16
    cls = hidden[:, :1]
    grid = hidden[:, 1:].reshape(3, 16, 16, -1).permute(0, 3, 1, 2)
    small = F.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False)
    expected = torch.cat([cls, small.permute(0, 2, 3, 1).reshape(3, 64, -1)], dim=1)
    assert torch.allclose(tokens.features, expected, atol=1e-5)
    # The CLS token is kept unchanged, and the 8x8 tokens are not all alike (the check has teeth).
    assert torch.allclose(tokens.features[:, 0], hidden[:, 0], atol=1e-6)
    assert tokens.features[:, 1:].std(dim=1).mean() > 0.1


def test_half_size_bilinear_is_the_mean_of_each_2x2_block():
    """align_corners=False at factor 2 samples at 2i+0.5: each 8x8 token is its 2x2 block's mean, row-major."""
    hidden = torch.randn(2, 257, 8, generator=torch.Generator().manual_seed(0))
    tokens = clip_recipe_tokens(hidden)
    assert tokens.shape == (2, 65, 8)
    assert torch.equal(tokens[:, 0], hidden[:, 0])
    grid = hidden[:, 1:].reshape(2, 16, 16, 8)
    for row, col in [(0, 0), (0, 7), (3, 5), (7, 7)]:
        block = grid[:, 2 * row: 2 * row + 2, 2 * col: 2 * col + 2].mean(dim=(1, 2))
        assert torch.allclose(tokens[:, 1 + row * 8 + col], block, atol=1e-6)


def test_recipe_refuses_a_grid_it_cannot_halve():
    with pytest.raises(ValueError, match="square grid"):
        clip_recipe_tokens(torch.zeros(1, 1 + 15 * 16, 4))
    with pytest.raises(ValueError, match="divisible by 2"):
        clip_recipe_tokens(torch.zeros(1, 1 + 15 * 15, 4))


def test_encode_puts_images_in_order_in_one_row(vision_encoder, noise_images):
    first, second = noise_images(2, seed=2)
    together = vision_encoder.encode([first, second])
    alone = [vision_encoder.encode_each([im]).features[0] for im in (first, second)]
    assert tuple(together.features.shape) == (1, 130, vision_encoder.hidden_size)
    assert together.lengths == [130] and together.source_model_id == vision_encoder.model_id
    assert torch.allclose(together.features[0, :65], alone[0], atol=1e-5)
    assert torch.allclose(together.features[0, 65:], alone[1], atol=1e-5)
    swapped = vision_encoder.encode([second, first]).features[0]
    assert torch.allclose(swapped[:65], alone[1], atol=1e-5) and not torch.allclose(swapped[:65], alone[0], atol=1e-3)


def test_rgba_grayscale_and_comfyui_tensors_are_accepted(vision_encoder, noise_images):
    rgb = noise_images(1, seed=3)[0]
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(rgb.width, dtype=np.uint8), (rgb.height, 1))))
    on_white = Image.alpha_composite(Image.new("RGBA", rgb.size, (255, 255, 255, 255)), rgba).convert("RGB")
    gray = rgb.convert("L")
    got = vision_encoder.encode_each([rgba, gray]).features
    assert torch.allclose(got[0], vision_encoder.encode_each([on_white]).features[0], atol=1e-5)
    assert torch.allclose(got[1], vision_encoder.encode_each([gray.convert("RGB")]).features[0], atol=1e-5)
    # A ComfyUI IMAGE batch [B, H, W, C] in 0..1 counts as its B images, in order.
    batch = torch.from_numpy(np.stack([np.asarray(rgb), np.asarray(on_white)])).float() / 255.0
    from_tensor = vision_encoder.encode([batch]).features[0]
    assert from_tensor.shape[0] == 130
    assert torch.allclose(from_tensor[:65], vision_encoder.encode_each([rgb]).features[0], atol=1e-5)


def test_no_images_is_an_error(vision_encoder):
    with pytest.raises(ValueError, match="at least one image"):
        vision_encoder.encode([])
