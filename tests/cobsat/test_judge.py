"""The judge: the benchmark's questions, its answer parsing and grading, and both judge models' paths."""

import pytest

from thinkdiff_core.images import open_image
from thinkdiff_core.testing.tiny import write_tiny_llava
from train.cobsat.tasks import TASKS, build_case
from train.cobsat.judge import MISSING, NO_ANSWER, LlavaJudge, QwenJudge, grade, judge_images, parse_choice, questions

from .conftest import ENTRY_0

TAIL = ". Answer the number only and do not include any other texts (e.g., 1)."


@pytest.fixture
def color_case(cobsat_dir):
    """Color-I, 2 shots: target object car (option 5), attribute orange (option 6)."""
    return build_case(cobsat_dir / "datasets", TASKS[1], 2, 0, ENTRY_0)


def test_questions_are_the_benchmarks(cobsat_dir, color_case):
    assert questions(color_case) == {
        "object": "What is the main object in this image? Answer from the following options:  (1)leaf (2)hat (3)cup "
                  "(4)chair (5)car (6)box (7)book (8)ball (9)bag (10)apple" + TAIL,
        "attribute": "What is the color (of the main object) in this image? Answer from the following options:  "
                     "(1)yellow (2)white (3)red (4)purple (5)pink (6)orange (7)green (8)brown (9)blue (10)black" + TAIL,
    }
    background = build_case(cobsat_dir / "datasets", TASKS[4], 2, 0, ENTRY_0)
    assert questions(background)["attribute"] == (
        "What is the background (of the main object) in this image? Answer from the following options:  (1)beach "
        "(2)desert (3)glacier (4)volcano (5)amusement park (6)gym (7)waterfall (8)space (9)cave (10)seafloor" + TAIL)
    assert "(4)pig" in questions(background)["object"] and "(9)wireframe" in questions(
        build_case(cobsat_dir / "datasets", TASKS[6], 2, 0, ENTRY_0))["attribute"]


@pytest.mark.parametrize("response, choice", [
    ("5", 5), ("(5) car", 5), ("The answer is 10.", 10), ("10", 10), ("1, 2", NO_ANSWER), ("11", NO_ANSWER),
    ("0", NO_ANSWER), ("car", NO_ANSWER), ("", NO_ANSWER),
])
def test_answer_parsing_reads_all_digits_as_one_number(response, choice):
    assert parse_choice(response) == choice


def test_both_right_counts(color_case):
    verdict = grade(color_case, "5", "(6)")
    assert verdict.object_correct and verdict.attribute_correct and verdict.correct


def test_one_wrong_answer_is_wrong(color_case):
    wrong_attribute = grade(color_case, "5", "7")
    assert wrong_attribute.object_correct and not wrong_attribute.attribute_correct and not wrong_attribute.correct
    no_object_answer = grade(color_case, "I see a car", "6")
    assert no_object_answer.object_answer == NO_ANSWER and not no_object_answer.correct


def test_missing_image_is_wrong_and_not_sent_to_the_judge(tiny_vlm, color_case, cobsat_dir, tmp_path):
    judge = QwenJudge(tiny_vlm, "qwen-tiny", max_new_tokens=4)
    present = color_case.image_paths[0]
    verdicts = judge_images(judge, [color_case, color_case], [tmp_path / "never_made.jpg", present])
    assert verdicts[0] == MISSING and not verdicts[0].correct and verdicts[0].missing
    assert not verdicts[1].missing
    assert verdicts[1].object_answer == parse_choice(verdicts[1].object_response)
    assert verdicts[1].attribute_answer == parse_choice(verdicts[1].attribute_response)
    assert judge_images(judge, [color_case], [tmp_path / "nothing.jpg"]) == [MISSING]


def test_qwen_judge_is_greedy(tiny_vlm, color_case):
    judge = QwenJudge(tiny_vlm, "qwen-tiny", max_new_tokens=6)
    image = open_image(color_case.image_paths[0])
    asked = list(questions(color_case).values())
    first = judge.answer([image, image], asked)
    assert len(first) == 2 and judge.answer([image, image], asked) == first


def test_llava_judge_loads_a_llava_hf_folder_and_answers(tmp_path, color_case):
    judge = LlavaJudge.from_pretrained(str(write_tiny_llava(tmp_path / "llava-tiny")), "llava-tiny", dtype="fp32",
                                       device="cpu", max_new_tokens=4)
    verdicts = judge_images(judge, [color_case, color_case], list(color_case.image_paths))
    assert [v.missing for v in verdicts] == [False, False]
    assert all(v.object_answer == parse_choice(v.object_response) for v in verdicts)
