"""The CoBSAT preset must render the reference prompt exactly (paper.md), and presets check their inputs."""

import pytest

from thinkdiff_core.prompts import build_prompt, cobsat_prompt, compose_prompt, parse_words

INSTRUCTION = (
    "I give you several words and pictures. First, please analyse what the next picture is. Then give me a "
    "detailed diffusion prompt to describe the next picture. Please only provide me the detailed prompt and "
    "start the answer with 'Create an image'.\n\n"
)
PICTURE = "Picture {}: <|vision_start|><|image_pad|><|vision_end|>"
HEADER = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
FOOTER = "<|im_end|>\n<|im_start|>assistant\n"


def test_cobsat_two_shot_renders_the_reference_prompt(tiny_vlm, colour_images):
    prompt = cobsat_prompt(colour_images("white", "blue"), ["white", "blue", "red"])
    expected = (
        HEADER + INSTRUCTION
        + "Word 1: white, " + PICTURE.format(1)
        + "\n\nWord 2: blue, " + PICTURE.format(2)
        + "\n\nWord 3: red, " + FOOTER
    )
    assert tiny_vlm.render(prompt) == expected


def test_cobsat_four_shot_renders_the_reference_prompt(tiny_vlm, colour_images):
    prompt = cobsat_prompt(colour_images("red", "red", "red", "red"), ["box", "cup", "car", "apple", "hat"])
    expected = (
        HEADER + INSTRUCTION
        + "Word 1: box, " + PICTURE.format(1)
        + "\n\nWord 2: cup, " + PICTURE.format(2)
        + "\n\nWord 3: car, " + PICTURE.format(3)
        + "\n\nWord 4: apple, " + PICTURE.format(4)
        + "\n\nWord 5: hat, " + FOOTER
    )
    assert tiny_vlm.render(prompt) == expected


@pytest.mark.parametrize("words", [["white", "blue"], ["white", "blue", "red", "green"], []])
def test_cobsat_word_count_must_be_images_plus_one(colour_images, words):
    with pytest.raises(ValueError, match=r"3 words for 2 images, got %d" % len(words)):
        cobsat_prompt(colour_images("white", "blue"), words)


def test_compose_accepts_labels_and_a_final_request(tiny_vlm, colour_images):
    images = colour_images("red", "blue")
    assert len(compose_prompt(images, []).images) == 2
    text = tiny_vlm.render(compose_prompt(images, ["dog", "sofa", "the dog sleeps on the sofa"]))
    assert "dog: " + PICTURE.format(1) + "\n\nsofa: " + PICTURE.format(2) + "\n\nthe dog sleeps on the sofa" in text
    with pytest.raises(ValueError, match="Got 4 words for 2 images"):
        compose_prompt(images, ["a", "b", "c", "d"])


def test_custom_preset_uses_the_user_instruction_and_needs_one(tiny_vlm, colour_images):
    prompt = build_prompt("custom", colour_images("red"), [], "Describe a sunset version of this.")
    assert "user\nDescribe a sunset version of this.\n\n" + PICTURE.format(1) in tiny_vlm.render(prompt)
    with pytest.raises(ValueError, match="custom preset needs an instruction"):
        build_prompt("custom", colour_images("red"), [], "   ")
    with pytest.raises(ValueError, match="Unknown prompt preset 'poem'"):
        build_prompt("poem", colour_images("red"), [])


def test_parse_words_one_per_line():
    assert parse_words("  white \n\nblue\r\nred  \n") == ["white", "blue", "red"]
