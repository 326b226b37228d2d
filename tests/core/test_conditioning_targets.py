"""Conditioning assembly per target on base conditionings laid out as ComfyUI's text encoders write them.

Layouts (ComfyUI 0.8.0): FLUX's T5 pads to 256 with no mask, pooled CLIP-L [1, 768], guidance; Kontext adds
`reference_latents`; SD3's encoder writes CLIP-L (768) + CLIP-G (1280) for 77 tokens per chunk, zero-padded
to 4096, then T5 (padded to 77), pooled [1, 2048], optionally a T5-only mask; Chroma's T5 does not pad and has
no pooled vector; LTX-Video's T5 pads to 128 and returns a long [1, L] mask. Redux with `attn_bias` appends its
729 image tokens and writes a float16 [B, L + n_ref, L + n_ref] bias with `attention_mask_img_shape`.
"""

import math

import pytest
import torch

from thinkdiff_core.conditioning import merge_conditioning

WIDTH = 4096


def flux_base(length=256, **extras):
    return [[torch.randn(1, length, WIDTH), {"pooled_output": torch.randn(1, 768), "guidance": 3.5, **extras}]]


def sd3_base(chunks=1, t5_length=77, t5_mask=False):
    clip_l, clip_g = torch.randn(1, 77 * chunks, 768), torch.randn(1, 77 * chunks, 1280)
    clip = torch.nn.functional.pad(torch.cat([clip_l, clip_g], -1), (0, WIDTH - 2048))
    extras = {"pooled_output": torch.randn(1, 2048)}
    if t5_mask:
        extras["attention_mask"] = torch.tensor([[1] * 10 + [0] * (t5_length - 10)])
    return [[torch.cat([clip, torch.randn(1, t5_length, WIDTH)], 1), extras]]


def chroma_base(length=6):
    return [[torch.randn(1, length, WIDTH), {"pooled_output": None}]]


def ltxv_base(real=9, length=128):
    mask = torch.tensor([[1] * real + [0] * (length - real)], dtype=torch.long)
    return [[torch.randn(1, length, WIDTH), {"pooled_output": None, "attention_mask": mask}]]


def redux(conditioning, strength=0.5, image_tokens=729):
    """Redux's attn_bias layout: its tokens after the text, log(strength) on their columns from every other row."""
    out = []
    for cond, extras in conditioning:
        extras = dict(extras)
        text = cond.shape[1]
        shape = extras.get("attention_mask_img_shape", (1, 1))
        size = text + image_tokens + shape[0] * shape[1]
        old = extras.get("attention_mask", torch.zeros(cond.shape[0], text + shape[0] * shape[1], text + shape[0] * shape[1]))
        keep = torch.cat([torch.arange(text), torch.arange(text + image_tokens, size)])
        bias = torch.zeros(cond.shape[0], size, size, dtype=torch.float16)
        bias[:, keep[:, None], keep[None, :]] = old.to(torch.float16)
        others = torch.ones(size, dtype=torch.bool)
        others[text:text + image_tokens] = False
        bias[:, others, text:text + image_tokens] = math.log(strength)
        extras.update(attention_mask=bias, attention_mask_img_shape=shape)
        out.append([torch.cat([cond, torch.randn(cond.shape[0], image_tokens, WIDTH)], 1), extras])
    return out


def aligned(tokens=16):
    return torch.randn(1, tokens, WIDTH)


@pytest.mark.parametrize("target", ["auto", "flux"])
def test_flux_modes_keep_pooled_and_guidance(target):
    base, tokens = flux_base(), aligned()
    for mode, expected in [("replace", tokens), ("prepend", torch.cat([tokens, base[0][0]], 1)),
                           ("append", torch.cat([base[0][0], tokens], 1))]:
        [[cond, extras]] = merge_conditioning(base, tokens, mode, target=target)
        assert torch.equal(cond, expected)
        assert extras["pooled_output"] is base[0][1]["pooled_output"] and extras["guidance"] == 3.5


def test_kontext_keeps_its_reference_latents():
    references = [torch.randn(1, 16, 64, 64)]
    base = flux_base(guidance=2.5, reference_latents=references)
    [[cond, extras]] = merge_conditioning(base, aligned(), "replace", target="flux_kontext")
    assert cond.shape == (1, 16, WIDTH)
    assert extras["reference_latents"] is references and extras["guidance"] == 2.5


@pytest.mark.parametrize("chunks", [1, 2])
def test_sd3_keeps_the_clip_segment_and_pooled_vector(chunks):
    base, tokens = sd3_base(chunks), aligned()
    clip, t5 = base[0][0][:, :77 * chunks], base[0][0][:, 77 * chunks:]
    for mode, expected in [("replace", [clip, tokens]), ("prepend", [clip, tokens, t5]), ("append", [clip, t5, tokens])]:
        [[out, extras]] = merge_conditioning(base, tokens, mode)
        assert torch.equal(out, torch.cat(expected, 1)), mode
        assert extras["pooled_output"] is base[0][1]["pooled_output"]


def test_sd3_t5_only_mask_stays_t5_only():
    base = sd3_base(t5_mask=True)
    [[cond, extras]] = merge_conditioning(base, aligned(4), "prepend", target="sd3")
    assert cond.shape[1] == 77 + 4 + 77
    assert extras["attention_mask"].tolist() == [[1] * 4 + [1] * 10 + [0] * 67]


def test_sd3_without_t5_puts_the_tokens_after_clip():
    clip = torch.nn.functional.pad(torch.randn(1, 77, 2048), (0, 2048))
    base, tokens = [[clip, {"pooled_output": torch.randn(1, 2048)}]], aligned()
    [[cond, _]] = merge_conditioning(base, tokens, "append")
    assert torch.equal(cond, torch.cat([clip, tokens], 1))


def test_chroma_replace_is_the_whole_prompt_and_prepend_puts_images_first():
    base, tokens = chroma_base(), aligned()
    [[cond, extras]] = merge_conditioning(base, tokens, "replace", target="chroma")
    assert torch.equal(cond, tokens) and extras["pooled_output"] is None
    [[cond, _]] = merge_conditioning(base, tokens, "prepend", target="chroma")
    assert torch.equal(cond, torch.cat([tokens, base[0][0]], 1))


@pytest.mark.parametrize("mode", ["replace", "prepend", "append"])
def test_ltxv_mask_is_extended_with_the_long_dtype(mode):
    base = ltxv_base(real=9)
    [[cond, extras]] = merge_conditioning(base, aligned(5), mode, target="ltxv")
    mask = extras["attention_mask"]
    expected = {"replace": [1] * 5, "prepend": [1] * 14 + [0] * 119, "append": [1] * 9 + [0] * 119 + [1] * 5}[mode]
    assert mask.dtype == torch.long and mask.tolist() == [expected] and cond.shape[1] == len(expected)


def test_strength_scales_only_the_aligned_tokens():
    base, tokens = flux_base(length=8), aligned(3)
    [[cond, _]] = merge_conditioning(base, tokens, "prepend", strength=0.25)
    assert torch.allclose(cond[:, :3], tokens * 0.25) and torch.equal(cond[:, 3:], base[0][0])
    [[cond, _]] = merge_conditioning(base, tokens, "append", strength=0.0)
    assert torch.count_nonzero(cond[:, 8:]) == 0


def test_token_budget_trims_masked_padding_only():
    base = ltxv_base(real=9, length=128)
    [[cond, extras]] = merge_conditioning(base, aligned(100), "prepend", token_budget=128)
    assert cond.shape[1] == 128 and torch.equal(cond[:, 100:], base[0][0][:, :28])
    assert extras["attention_mask"].tolist() == [[1] * 109 + [0] * 19]
    [[cond, _]] = merge_conditioning(base, aligned(100), "prepend", token_budget=0)  # 0: no budget
    assert cond.shape[1] == 228
    [[cond, _]] = merge_conditioning(ltxv_base(), aligned(10), "append", token_budget=500)  # fits: untouched
    assert cond.shape[1] == 138


def test_token_budget_refuses_when_real_tokens_exceed_it():
    with pytest.raises(ValueError, match=r"budget is 128 but the conditioning needs 129: 120 aligned tokens and 9 prompt "
                                         r"tokens \(119 padding tokens could be trimmed\).*raise token_budget"):
        merge_conditioning(ltxv_base(real=9), aligned(120), "prepend", token_budget=128)
    with pytest.raises(ValueError, match="needs 200: 200 aligned tokens. Shorten the prompt, lower max_new_tokens"):
        merge_conditioning(ltxv_base(), aligned(200), "replace", token_budget=128)
    with pytest.raises(ValueError, match="without an attention mask the prompt's padding cannot be told apart"):
        merge_conditioning(flux_base(), aligned(16), "prepend", token_budget=226)
    with pytest.raises(ValueError, match="after 77 CLIP tokens"):
        merge_conditioning(sd3_base(), aligned(16), "append", token_budget=100)


def test_redux_bias_is_extended_and_the_chain_works_in_either_order():
    base, tokens = flux_base(length=10), aligned(4)
    after_redux = merge_conditioning(redux(base), tokens, "prepend")
    before_redux = redux(merge_conditioning(base, tokens, "prepend"))
    [[cond_a, extras_a]], [[cond_b, extras_b]] = after_redux, before_redux
    assert cond_a.shape == cond_b.shape == (1, 4 + 10 + 729, WIDTH)
    assert torch.equal(cond_a[:, :14], cond_b[:, :14])
    assert extras_a["attention_mask"].shape == (1, 744, 744) and extras_a["attention_mask"].dtype == torch.float16
    assert torch.equal(extras_a["attention_mask"], extras_b["attention_mask"])
    assert extras_a["attention_mask_img_shape"] == (1, 1)


def test_append_after_redux_keeps_redux_bias_and_lets_the_new_tokens_be_seen():
    [[_, extras]] = merge_conditioning(redux(flux_base(length=10)), aligned(4), "append")
    bias = extras["attention_mask"].float()
    assert bias.shape == (1, 744, 744)
    assert torch.allclose(bias[0, 0, 10:739], torch.full((729,), math.log(0.5)), atol=1e-3)  # text -> redux kept
    assert torch.count_nonzero(bias[0, :, 739:743]) == 0  # everyone attends the new tokens
    assert torch.allclose(bias[0, 739, 10:739], torch.full((729,), math.log(0.5)), atol=1e-3)  # as text does


def test_bool_3d_mask_and_image_shape_mismatch():
    base = flux_base(length=3, attention_mask=torch.ones(1, 4, 4, dtype=torch.bool), attention_mask_img_shape=(1, 1))
    [[_, extras]] = merge_conditioning(base, aligned(2), "append")
    assert extras["attention_mask"].dtype == torch.bool and bool(extras["attention_mask"].all())
    bad = flux_base(length=3, attention_mask=torch.zeros(1, 4, 4), attention_mask_img_shape=(2, 2))
    with pytest.raises(ValueError, match="1 reference-image positions but attention_mask_img_shape"):
        merge_conditioning(bad, aligned(2), "append")


def test_replace_after_redux_is_refused():
    with pytest.raises(ValueError, match="3-D attention bias .*Apply Redux after ThinkDiff Conditioning"):
        merge_conditioning(redux(flux_base(length=10)), aligned(4), "replace")


def test_refusals_name_the_text_encoder_to_connect():
    with pytest.raises(ValueError, match="target is ltxv but the base conditioning has a pooled vector of width 768.*"
                                         "CLIPLoader with type chroma or ltxv"):
        merge_conditioning(flux_base(), aligned(), target="ltxv")
    with pytest.raises(ValueError, match="target is sd3 but the base conditioning has no pooled vector.*TripleCLIPLoader"):
        merge_conditioning(chroma_base(), aligned(), target="sd3")
    with pytest.raises(ValueError, match="target is flux but .*width 2048.*DualCLIPLoader with type flux"):
        merge_conditioning(sd3_base(), aligned(), target="flux")
    with pytest.raises(ValueError, match="width 1280, which is neither FLUX's CLIP-L"):
        merge_conditioning([[torch.randn(1, 77, WIDTH), {"pooled_output": torch.randn(1, 1280)}]], aligned())
    with pytest.raises(ValueError, match="HiDream's text encoder"):
        merge_conditioning([[torch.randn(1, 128, WIDTH), {"pooled_output": torch.randn(1, 2048),
                                                          "conditioning_llama3": torch.randn(1, 32, 1, WIDTH)}]], aligned())
    with pytest.raises(ValueError, match="Unknown target 'wan'"):
        merge_conditioning(flux_base(), aligned(), target="wan")
    odd = torch.cat([torch.nn.functional.pad(torch.randn(1, 50, 2048), (0, 2048)), torch.randn(1, 20, WIDTH)], 1)
    with pytest.raises(ValueError, match="50 zero-padded CLIP tokens, not a multiple of 77"):
        merge_conditioning([[odd, {"pooled_output": torch.randn(1, 2048)}]], aligned())
    with pytest.raises(ValueError, match="attention_mask covers 5 tokens but its cond has 128"):
        merge_conditioning([[torch.randn(1, 128, WIDTH), {"attention_mask": torch.ones(1, 5)}]], aligned())
