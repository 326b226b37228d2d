"""Prompt construction matches the CoBSAT benchmark's definition, for every task and shot count.

Expected values are worked out by hand from the benchmark's rules (see train/cobsat/tasks.py) for the
benchmark's first prompt-list entry: x_list [8,7,5,9,2,3,6,1,4,0], theta_list [7,6,3,4,1,0,2,5,9,8].
"""

import json

import pytest

from thinkdiff_core.prompts import build_prompt
from train.cobsat.harness import request_for
from train.cobsat.tasks import PROMPT_LIST, TASKS, build_case, build_cases, load_prompt_list

from .conftest import ENTRY_0

# (task, shot) -> (theta, words, image files under datasets/, target object, target attribute)
EXPECTED = {
    (1, 2): ("car", ["blue", "brown", "orange"], ["color_car/blue_car.jpg", "color_car/brown_car.jpg"], "car", "orange"),
    (1, 4): ("leaf", ["blue", "brown", "orange", "black", "red"],
             ["color_leaf/blue_leaf.jpg", "color_leaf/brown_leaf.jpg", "color_leaf/orange_leaf.jpg",
              "color_leaf/black_leaf.jpg"], "leaf", "red"),
    (1, 6): ("box", ["blue", "brown", "orange", "black", "red", "purple", "green"],
             ["color_box/blue_box.jpg", "color_box/brown_box.jpg", "color_box/orange_box.jpg", "color_box/black_box.jpg",
              "color_box/red_box.jpg", "color_box/purple_box.jpg"], "box", "green"),
    (1, 8): ("bag", ["blue", "brown", "orange", "black", "red", "purple", "green", "white", "pink"],
             ["color_bag/blue_bag.jpg", "color_bag/brown_bag.jpg", "color_bag/orange_bag.jpg", "color_bag/black_bag.jpg",
              "color_bag/red_bag.jpg", "color_bag/purple_bag.jpg", "color_bag/green_bag.jpg", "color_bag/white_bag.jpg"],
             "bag", "pink"),
    (2, 2): ("pink", ["bag", "ball", "box"], ["color_bag/pink_bag.jpg", "color_ball/pink_ball.jpg"], "box", "pink"),
    (2, 4): ("yellow", ["bag", "ball", "box", "apple", "cup"],
             ["color_bag/yellow_bag.jpg", "color_ball/yellow_ball.jpg", "color_box/yellow_box.jpg",
              "color_apple/yellow_apple.jpg"], "cup", "yellow"),
    (2, 8): ("blue", ["bag", "ball", "box", "apple", "cup", "chair", "book", "hat", "car"],
             ["color_bag/blue_bag.jpg", "color_ball/blue_ball.jpg", "color_box/blue_box.jpg", "color_apple/blue_apple.jpg",
              "color_cup/blue_cup.jpg", "color_chair/blue_chair.jpg", "color_book/blue_book.jpg",
              "color_hat/blue_hat.jpg"], "car", "blue"),
    (3, 2): ("monkey", ["cave", "space", "gym"],
             ["background_monkey/cave_monkey.jpg", "background_monkey/space_monkey.jpg"], "monkey", "gym"),
    (3, 8): ("cat", ["cave", "space", "gym", "seafloor", "glacier", "volcano", "waterfall", "desert", "amusement park"],
             ["background_cat/cave_cat.jpg", "background_cat/space_cat.jpg", "background_cat/gym_cat.jpg",
              "background_cat/seafloor_cat.jpg", "background_cat/glacier_cat.jpg", "background_cat/volcano_cat.jpg",
              "background_cat/waterfall_cat.jpg", "background_cat/desert_cat.jpg"], "cat", "park"),
    (4, 2): ("park", ["cat", "cow", "lion"], ["background_cat/park_cat.jpg", "background_cow/park_cow.jpg"],
             "lion", "park"),
    (5, 2): ("car", ["wireframe", "futuristic", "icon"], ["style_car/3d_car.jpg", "style_car/futuristic_car.jpg"],
             "car", "icon"),
    (6, 2): ("lego", ["bag", "ball", "box"], ["style_bag/lego_bag.jpg", "style_ball/lego_ball.jpg"], "box", "lego"),
    (6, 8): ("3d", ["bag", "ball", "box", "apple", "cup", "chair", "book", "hat", "car"],
             ["style_bag/3d_bag.jpg", "style_ball/3d_ball.jpg", "style_box/3d_box.jpg", "style_apple/3d_apple.jpg",
              "style_cup/3d_cup.jpg", "style_chair/3d_chair.jpg", "style_book/3d_book.jpg", "style_hat/3d_hat.jpg"],
             "car", "3d"),
    (7, 2): ("monkey", ["cry", "drink", "fly"], ["action_monkey/cry_monkey.jpg", "action_monkey/drink_monkey.jpg"],
             "monkey", "fly"),
    (7, 6): ("lion", ["cry", "drink", "fly", "angry", "sing", "run", "eat"],
             ["action_lion/cry_lion.jpg", "action_lion/drink_lion.jpg", "action_lion/fly_lion.jpg",
              "action_lion/angry_lion.jpg", "action_lion/sing_lion.jpg", "action_lion/run_lion.jpg"], "lion", "eat"),
    (8, 2): ("read", ["cat", "cow", "lion"], ["action_cat/read_cat.jpg", "action_cow/read_cow.jpg"], "lion", "read"),
    (8, 4): ("swim", ["cat", "cow", "lion", "bird", "sheep"],
             ["action_cat/swim_cat.jpg", "action_cow/swim_cow.jpg", "action_lion/swim_lion.jpg",
              "action_bird/swim_bird.jpg"], "sheep", "swim"),
    (9, 2): ("car", ["denim", "lace", "metal"], ["texture_car/denim_car.jpg", "texture_car/lace_car.jpg"],
             "car", "metal"),
    (9, 4): ("leaf", ["denim", "lace", "metal", "ceramic", "sequined"],
             ["texture_leaf/denim_leaf.jpg", "texture_leaf/lace_leaf.jpg", "texture_leaf/metal_leaf.jpg",
              "texture_leaf/ceramic_leaf.jpg"], "leaf", "sequined"),
    (10, 2): ("paper", ["bag", "ball", "box"], ["texture_bag/paper_bag.jpg", "texture_ball/paper_ball.jpg"],
              "box", "paper"),
    (10, 6): ("metal", ["bag", "ball", "box", "apple", "cup", "chair", "book"],
              ["texture_bag/metal_bag.jpg", "texture_ball/metal_ball.jpg", "texture_box/metal_box.jpg",
               "texture_apple/metal_apple.jpg", "texture_cup/metal_cup.jpg", "texture_chair/metal_chair.jpg"],
              "book", "metal"),
}


@pytest.mark.parametrize("task_id, shot", sorted(EXPECTED))
def test_case_matches_the_benchmark(cobsat_dir, task_id, shot):
    theta, words, images, target_object, target_attribute = EXPECTED[task_id, shot]
    case = build_case(cobsat_dir / "datasets", TASKS[task_id], shot, 0, ENTRY_0)
    assert case.theta == theta
    assert list(case.words) == words
    assert [p.relative_to(cobsat_dir / "datasets").as_posix() for p in case.image_paths] == images
    assert all(p.is_file() for p in case.image_paths)
    assert (case.target_object, case.target_attribute) == (target_object, target_attribute)
    assert case.name == f"0_{theta}_{'_'.join(words)}"


def test_every_task_and_shot_count_has_shot_images_and_shot_plus_one_words(cobsat_dir):
    cases = build_cases(cobsat_dir, list(TASKS), [2, 4, 6, 8], num_prompts=2)
    assert len(cases) == 10 * 4 * 2
    for case in cases:
        assert len(case.image_paths) == case.shot and len(case.words) == case.shot + 1
        assert len({p.parent for p in case.image_paths}) == (case.shot if case.task.words_are_objects else 1)


def test_reference_vlm_prompt_for_a_case(cobsat_dir, tiny_vlm):
    """What the harness asks the VLM for Color-I, 2 shots: the reference prompt with the case's words."""
    case = build_case(cobsat_dir / "datasets", TASKS[1], 2, 0, ENTRY_0)
    request = request_for(case)
    rendered = tiny_vlm.render(build_prompt(request.preset, request.images, request.words, request.instruction))
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "I give you several words and pictures. First, please analyse what the next picture is. Then give me a "
        "detailed diffusion prompt to describe the next picture. Please only provide me the detailed prompt and "
        "start the answer with 'Create an image'.\n\n"
        f"Word 1: blue, Picture 1: {vision}\n\nWord 2: brown, Picture 2: {vision}\n\nWord 3: orange, <|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_prompt_list_and_dataset_are_checked(tmp_path, cobsat_dir):
    with pytest.raises(FileNotFoundError, match="prompts_list_default.json"):
        load_prompt_list(tmp_path)
    (tmp_path / PROMPT_LIST).parent.mkdir(parents=True)
    (tmp_path / PROMPT_LIST).write_text(json.dumps([{"x_list": [0, 1, 2], "theta_list": list(range(10))}]))
    with pytest.raises(ValueError, match="not a permutation of 0..9"):
        load_prompt_list(tmp_path)
    (tmp_path / PROMPT_LIST).write_text(json.dumps([ENTRY_0]))
    with pytest.raises(FileNotFoundError, match="yzeng58/CoBSAT"):
        build_cases(tmp_path, [1], [2], num_prompts=1)
    with pytest.raises(ValueError, match="Unknown CoBSAT task ids"):
        build_cases(cobsat_dir, [11], [2], num_prompts=1)
    with pytest.raises(ValueError, match="1 to 8 shots"):
        build_case(cobsat_dir / "datasets", TASKS[1], 9, 0, ENTRY_0)
