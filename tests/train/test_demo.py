"""The embedded demo: after alignment the held-out proxy accuracy is far above the untrained aligner's."""

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.tiny import TINY_BLIP2_VISION_WIDTH
from thinkdiff_core.tokens import CLIP_RECIPE, LVLM_RECIPE
from train.demo import run_demo


def test_demo_alignment_beats_the_untrained_aligner_by_a_wide_margin(tmp_path):
    result = run_demo(tmp_path / "demo", train_images=160, held_out_images=48, vlm_steps=60, t5_steps=150,
                      overrides={"optim": {"max_steps": 120}, "run": {"eval_every": 0, "save_every": 0}})
    before, after = result["before"], result["after"]
    assert after.samples == before.samples == 48
    assert after.loss < before.loss / 4
    assert after.token_accuracy >= before.token_accuracy + 0.1
    assert after.exact_match >= before.exact_match + 0.4

    aligner = load_aligner(result["aligner"])
    assert aligner.info.token_recipe == LVLM_RECIPE and aligner.info.source_model_id == "tiny-qwen2-vl"
    assert aligner.info.provenance["recipe"] == "thinkdiff-lvlm" and aligner.info.provenance["steps"] == 120
    assert aligner.module.input_size == aligner.module.output_size == 64


def test_clip_demo_alignment_beats_the_untrained_aligner(tmp_path):
    result = run_demo(tmp_path / "demo", train_images=160, held_out_images=48, t5_steps=150, variant="clip",
                      overrides={"optim": {"max_steps": 120}, "run": {"eval_every": 0, "save_every": 0}})
    before, after = result["before"], result["after"]
    assert after.samples == before.samples == 48
    assert after.loss < before.loss / 3
    assert after.token_accuracy >= before.token_accuracy + 0.05
    assert after.exact_match >= before.exact_match + 0.3

    aligner = load_aligner(result["aligner"])
    assert aligner.info.token_recipe == CLIP_RECIPE and aligner.info.source_model_id == "tiny-blip2"
    assert aligner.info.provenance["recipe"] == "thinkdiff-clip" and aligner.info.provenance["steps"] == 120
    assert aligner.module.input_size == TINY_BLIP2_VISION_WIDTH and aligner.module.output_size == 64
