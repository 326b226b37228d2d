"""The embedded demo: after alignment the held-out proxy accuracy is far above the untrained aligner's."""

import pytest

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.testing.tiny import TINY_BLIP2_VISION_WIDTH
from thinkdiff_core.tokens import CLIP_RECIPE, LVLM_RECIPE
from train.demo import run_demo


# (variant, recipe, source, aligner input size, loss divided by at least, token accuracy gain, exact-match gain).
# The CLIP stand-in tower is random (it carries colours, hardly shapes) and the T5-encoded caption start lets even
# an untrained aligner finish many captions, so its margins are narrower (measured: loss / 4.0 and / 5.1, exact
# match +0.56 and +0.25 under transformers 5 and 4).
DEMOS = [("lvlm", LVLM_RECIPE, "tiny-qwen2-vl", 64, 4, 0.1, 0.4),
         ("clip", CLIP_RECIPE, "tiny-blip2", TINY_BLIP2_VISION_WIDTH, 3, 0.03, 0.2)]


@pytest.mark.parametrize("variant, recipe, source, input_size, loss_factor, accuracy_gain, exact_gain", DEMOS)
def test_demo_alignment_beats_the_untrained_aligner_by_a_wide_margin(tmp_path, variant, recipe, source, input_size,
                                                                     loss_factor, accuracy_gain, exact_gain):
    result = run_demo(tmp_path / "demo", train_images=160, held_out_images=48, vlm_steps=60, t5_steps=150,
                      overrides={"optim": {"max_steps": 120}, "run": {"eval_every": 0, "save_every": 0}},
                      variant=variant)
    before, after = result["before"], result["after"]
    assert after.samples == before.samples == 48
    assert after.loss < before.loss / loss_factor
    assert after.token_accuracy >= before.token_accuracy + accuracy_gain
    assert after.exact_match >= before.exact_match + exact_gain

    aligner = load_aligner(result["aligner"])
    assert aligner.info.token_recipe == recipe and aligner.info.source_model_id == source
    assert aligner.info.provenance["recipe"] == f"thinkdiff-{variant}" and aligner.info.provenance["steps"] == 120
    recorded = {k: aligner.info.provenance.get(k) for k in ("features", "masking")}
    assert recorded == ({"features": "generated", "masking": "random"} if variant == "lvlm" else {"features": None,
                                                                                                  "masking": None})
    assert aligner.module.input_size == input_size and aligner.module.output_size == 64
