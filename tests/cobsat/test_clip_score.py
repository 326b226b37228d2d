"""The benchmark's CLIP similarity: its texts, logit-scaled cosine floored at 0, argmax check, missing = 0."""

import numpy as np
import pytest
import torch
from PIL import Image

from thinkdiff_core.testing.tiny import write_tiny_clip
from train.cobsat.clip_score import MISSING_SCORE, ClipScorer, ground_truth
from train.cobsat.tasks import ITEMS, TASKS, build_case

from .conftest import ENTRY_0


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return ClipScorer.from_pretrained(str(write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip-tiny", seed=1)),
                                      device="cpu")


def test_ground_truth_is_the_query_word_and_the_inferred_item(cobsat_dir):
    colour = build_case(cobsat_dir / "datasets", TASKS[1], 2, 0, ENTRY_0)  # words are colours, object inferred
    assert ground_truth(colour) == (colour.words[-1], colour.theta)
    style = build_case(cobsat_dir / "datasets", TASKS[6], 2, 0, ENTRY_0)  # words are objects, style inferred
    assert ground_truth(style) == (style.theta, style.words[-1])


def test_similarities_are_logit_scaled_cosines_floored_at_zero(scorer, cobsat_dir):
    case = build_case(cobsat_dir / "datasets", TASKS[1], 2, 0, ENTRY_0)
    detail, obj = ground_truth(case)
    texts = [detail, obj, f"{detail} {obj}", *ITEMS["object"], *ITEMS["color"]]
    rng = np.random.default_rng(0)
    positive = 0
    for _ in range(4):
        image = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
        inputs = scorer.processor(text=texts, images=image, return_tensors="pt", padding=True)
        with torch.no_grad():
            text = scorer.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            pixels = scorer.model.get_image_features(pixel_values=inputs["pixel_values"])
        text, pixels = [getattr(t, "pooler_output", t) for t in (text, pixels)]
        cosine = torch.nn.functional.cosine_similarity(text, pixels, dim=-1) * scorer.model.logit_scale.exp()
        expected = cosine.clamp(min=0)
        score = scorer.score(case, image)
        positive += int((expected > 0).sum())
        assert score["clip_similarity_overall"] == pytest.approx(float(expected[2]), abs=1e-4)
        assert score["clip_similarity_attribute"] == pytest.approx(float(expected[0]), abs=1e-4)
        assert score["clip_correct"] == (ITEMS["object"][int(expected[3:13].argmax())] == case.target_object
                                         and ITEMS["color"][int(expected[13:].argmax())] == case.target_attribute)
    assert 0 < positive < 4 * len(texts)  # both sides of the floor were exercised


def test_missing_image_scores_zero(scorer, cobsat_dir, tmp_path):
    case = build_case(cobsat_dir / "datasets", TASKS[1], 2, 0, ENTRY_0)
    scores = scorer.score_files([case, case], [tmp_path / "never.jpg", case.image_paths[0]])
    assert scores[0] == MISSING_SCORE and not scores[1]["missing"]
