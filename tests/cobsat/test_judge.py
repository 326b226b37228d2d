"""The judge: the benchmark's questions, its answer parsing and grading, and both judge models' paths."""

import pytest

from thinkdiff_core.images import open_image
from tests.tiny_files import write_tiny_llava
from train.cobsat.tasks import TASKS, build_case
from train.cobsat.judge import (MISSING, NO_ANSWER, LlavaJudge, QwenJudge, grade, judge_images, llava_input_ids,
                                llava_v1_prompt, pad_to_square, parse_choice, questions)

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


OBJECT_PROMPT_AS_LLAVA_RENDERS_IT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the human's questions. USER: <image>\nWhat is the main object in this image? Answer from "
    "the following options:  (1)leaf (2)hat (3)cup (4)chair (5)car (6)box (7)book (8)ball (9)bag (10)apple. Answer "
    "the number only and do not include any other texts (e.g., 1). ASSISTANT:"
)
"""`conv_templates["llava_v1"]` of the benchmark's LLaVA (yzeng58/LLaVA a61aae0) after `run_llava.eval_model`
put `<image>\n` before the question and appended the (USER, question) and (ASSISTANT, None) messages."""


def test_llava_prompt_is_the_text_the_benchmarks_llava_renders(color_case):
    assert llava_v1_prompt(questions(color_case)["object"]) == OBJECT_PROMPT_AS_LLAVA_RENDERS_IT
    assert llava_v1_prompt("x" * 3000).endswith("x" * 2047 + " ASSISTANT:")  # the benchmark's prompt[:2047]


def llama_style_tokenizer():
    """A sentencepiece-like BPE as Llama's: word starts marked by "▁", one prepended at the start of a text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator([OBJECT_PROMPT_AS_LLAVA_RENDERS_IT], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=["<image>"])


def test_llava_token_ids_tokenize_each_side_of_the_image_alone():
    """LLaVA's `tokenizer_image_token`: one BOS, the image ids, then the question starting with a word start
    ("▁" before the newline), which tokenizing the whole text (llava-hf's processor) does not give."""
    tokenizer = llama_style_tokenizer()
    image = tokenizer.convert_tokens_to_ids("<image>")
    before, after = OBJECT_PROMPT_AS_LLAVA_RENDERS_IT.split("<image>")
    ids = llava_input_ids(OBJECT_PROMPT_AS_LLAVA_RENDERS_IT, tokenizer, image, image_tokens=3)
    assert ids == tokenizer(before).input_ids + [image] * 3 + tokenizer(after).input_ids[1:]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens.count("<s>") == 1 and tokens[0] == "<s>"
    first, second = tokens[tokens.index("<image>") + 3:][:2]
    assert first == "▁" and second.startswith("\n")
    whole = tokenizer.convert_ids_to_tokens(tokenizer(OBJECT_PROMPT_AS_LLAVA_RENDERS_IT).input_ids)
    assert whole[whole.index("<image>") + 1].startswith("\n")


def test_pad_to_square_centres_on_the_colour():
    from PIL import Image

    square = pad_to_square(Image.new("RGB", (4, 2), (255, 0, 0)), (122, 116, 104))
    assert square.size == (4, 4)
    assert [square.getpixel((0, y)) for y in range(4)] == [(122, 116, 104), (255, 0, 0), (255, 0, 0), (122, 116, 104)]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return write_tiny_llava(tmp_path_factory.mktemp("llava") / "llava-tiny")


def test_llava_judge_defaults_to_fp16_one_call_per_question(tiny_llava, color_case):
    judge = LlavaJudge.from_pretrained(str(tiny_llava), "llava-tiny", device="cpu", max_new_tokens=3)
    assert judge.settings == {"judge": "llava-tiny", "dtype": "float16", "batch_size": 1, "max_new_tokens": 3,
                              "decoding": "greedy"}
    question = questions(color_case)["object"]
    assert judge.input_ids(question) == llava_input_ids(
        llava_v1_prompt(question), judge.processor.tokenizer, judge.model.config.image_token_index, 4)


def test_llava_judge_batched_answers_are_the_single_calls_answers(tiny_llava, color_case):
    """On the tiny judge in fp32: left-padded batches of 4 answer token for token as one call per question."""
    single = LlavaJudge.from_pretrained(str(tiny_llava), "llava-tiny", dtype="fp32", device="cpu", max_new_tokens=6)
    batched = LlavaJudge(single.model, single.processor, "llava-tiny", max_new_tokens=6, batch_size=4)
    images = [open_image(path) for path in color_case.image_paths] * 2
    asked = [questions(color_case)["object"], questions(color_case)["attribute"]] * 2
    assert batched.answer(images, asked) == single.answer(images, asked)
