"""The embedded demo: after alignment the held-out proxy accuracy is far above the untrained aligner's."""

import pytest

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.testing.synthetic import COLOURS, SHAPES
from thinkdiff_core.testing.tiny import TINY_BLIP2_VISION_WIDTH
from thinkdiff_core.tokens import CLIP_RECIPE, LVLM_RECIPE
from train.demo import run_demo, vlm_content_accuracy
from train.evaluate import content_hits


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
    assert after.content_words == before.content_words > 0 and after.content_accuracy >= before.content_accuracy

    aligner = load_aligner(result["aligner"])
    assert aligner.info.token_recipe == recipe and aligner.info.source_model_id == source
    assert aligner.info.provenance["recipe"] == f"thinkdiff-{variant}" and aligner.info.provenance["steps"] == 120
    recorded = {k: aligner.info.provenance.get(k) for k in ("features", "masking")}
    assert recorded == ({"features": "generated", "masking": "random"} if variant == "lvlm" else {"features": None,
                                                                                                  "masking": None})
    assert aligner.module.input_size == input_size and aligner.module.output_size == 64


def test_content_hits_count_only_colour_and_shape_words_at_their_position():
    words = frozenset(COLOURS) | frozenset(SHAPES)
    assert content_hits("red star on a plain background", "red star on a plain background", words) == (2, 2)
    # the predictable ending right, the content wrong: no credit, unlike exact match or token accuracy
    assert content_hits("red star on a plain background", "blue star on a plain background", words) == (1, 2)
    assert content_hits("red star on a plain background", "star red on a plain background", words) == (0, 2)
    assert content_hits("red star on a plain background", "red", words) == (1, 2)
    assert content_hits("on a plain background", "on a plain background", words) == (0, 0)


def test_the_vlm_content_accuracy_reads_the_stored_answers_against_the_true_captions(tmp_path):
    import io
    import json
    import tarfile

    rows = [("a red star on a plain background", "a red star on a plain background"),
            ("a blue ring on a plain background", "a blue circle on a plain background")]
    with tarfile.open(tmp_path / "000000.tar", "w") as tar:
        for i, (caption, text) in enumerate(rows):
            data = json.dumps({"caption": caption, "text": text}).encode()
            info = tarfile.TarInfo(f"{i:06d}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert vlm_content_accuracy(tmp_path) == 3 / 4
    assert vlm_content_accuracy(tmp_path / "empty") is None
