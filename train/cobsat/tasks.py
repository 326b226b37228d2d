"""The CoBSAT benchmark's tasks, dataset layout and in-context prompts (Zeng et al., COLM 2024).

Facts from the benchmark's public definition (github UW-Madison-Lee-Lab/CoBSAT, MIT; paper.md):

- Five themes pair an attribute space with an object space: color/object, background/animal,
  style/object, action/animal, texture/object, ten items each. Images live at
  `datasets/{theme}_{object}/{attribute}_{object}.jpg`.
- Ten tasks. Odd ids ("-I"): the words are attributes and the common object is inferred from the
  images; even ids ("-II"): the words are objects and the common attribute is inferred.
- A fixed prompt list (`load_datasets/prompts_list_default.json`: 1,000 entries, each two
  permutations `x_list`, `theta_list` of 0..9) defines every prompt. For a `shot`-shot prompt of entry
  e: the latent item is `theta = thetas[e.theta_list[shot + 1]]`; the words are
  `xs[e.x_list[0..shot]]` (the last one is the query); image k shows word k with the latent item.
- Two items are shown as other words: "3d" as "wireframe", "park" as "amusement park" (file names keep
  the item).
- Generated images are named `{index}_{theta}_{word_1}_..._{word_shot+1}.jpg`.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ITEMS = {
    "color": ["yellow", "white", "red", "purple", "pink", "orange", "green", "brown", "blue", "black"],
    "object": ["leaf", "hat", "cup", "chair", "car", "box", "book", "ball", "bag", "apple"],
    "animal": ["zebra", "tiger", "sheep", "pig", "monkey", "lion", "dog", "cow", "cat", "bird"],
    "style": ["watercolor", "sketch", "pixel", "origami", "lego", "icon", "graffiti", "futuristic", "3d", "old"],
    "action": ["swim", "sleep", "sing", "run", "read", "fly", "eat", "drink", "cry", "angry"],
    "background": ["beach", "desert", "glacier", "volcano", "park", "gym", "waterfall", "space", "cave", "seafloor"],
    "texture": ["wood", "wicker", "sequined", "plastic", "paper", "metal", "leather", "lace", "denim", "ceramic"],
}
ITEM_WORDS = {"3d": "wireframe", "park": "amusement park"}
"""Items whose shown word differs from their file name."""

THEMES = {"color": "object", "background": "animal", "style": "object", "action": "animal", "texture": "object"}
"""Attribute space -> object space of each theme; the dataset folder prefix is the attribute space."""

PROMPT_LIST = Path("load_datasets") / "prompts_list_default.json"
LEGACY_PROMPT_LIST = Path("load_datasets") / "prompts_list.json"
SHOTS = (2, 4, 6, 8)
MAX_SHOT = 8
"""`theta_list[shot + 1]` must exist in a permutation of ten: at most 8 shots."""


def word(item: str) -> str:
    return ITEM_WORDS.get(item, item)


@dataclass(frozen=True)
class Task:
    """One CoBSAT task: which space the words come from (`x`) and which one is inferred (`theta`)."""

    id: int
    name: str
    theme: str

    @property
    def object_space(self) -> str:
        return THEMES[self.theme]

    @property
    def words_are_objects(self) -> bool:
        """Even ("-II") tasks: the words name objects, the common attribute is inferred from the images."""
        return self.id % 2 == 0

    @property
    def x_space(self) -> str:
        return self.object_space if self.words_are_objects else self.theme

    @property
    def theta_space(self) -> str:
        return self.theme if self.words_are_objects else self.object_space


TASKS = {
    task.id: task
    for task in [
        Task(1, "Color-I", "color"), Task(2, "Color-II", "color"),
        Task(3, "Background-I", "background"), Task(4, "Background-II", "background"),
        Task(5, "Style-I", "style"), Task(6, "Style-II", "style"),
        Task(7, "Action-I", "action"), Task(8, "Action-II", "action"),
        Task(9, "Texture-I", "texture"), Task(10, "Texture-II", "texture"),
    ]
}


@dataclass(frozen=True)
class Case:
    """One in-context prompt: `shot` images with their words, then the query word."""

    task: Task
    shot: int
    index: int
    words: tuple[str, ...]
    image_paths: tuple[Path, ...]
    theta: str
    query: str
    """The query's item (the last word as an item name, e.g. "3d" for "wireframe")."""

    @property
    def name(self) -> str:
        """The benchmark's file stem for this prompt's generated image."""
        return f"{self.index}_{self.theta}_{'_'.join(self.words)}"

    @property
    def target_object(self) -> str:
        return self.query if self.task.words_are_objects else self.theta

    @property
    def target_attribute(self) -> str:
        return self.theta if self.task.words_are_objects else self.query


def image_path(dataset_dir: Path, task: Task, x_item: str, theta_item: str) -> Path:
    obj, attribute = (x_item, theta_item) if task.words_are_objects else (theta_item, x_item)
    return dataset_dir / f"{task.theme}_{obj}" / f"{attribute}_{obj}.jpg"


def build_case(dataset_dir: Path, task: Task, shot: int, index: int, entry: dict) -> Case:
    """The benchmark's `shot`-shot prompt for prompt-list entry `entry` (number `index`) of `task`."""
    if not 1 <= shot <= MAX_SHOT:
        raise ValueError(f"CoBSAT prompts have 1 to {MAX_SHOT} shots; got {shot}.")
    xs, thetas = ITEMS[task.x_space], ITEMS[task.theta_space]
    theta = thetas[entry["theta_list"][shot + 1]]
    x_items = [xs[i] for i in entry["x_list"][: shot + 1]]
    paths = tuple(image_path(dataset_dir, task, x, theta) for x in x_items[:shot])
    return Case(task, shot, index, tuple(word(x) for x in x_items), paths, theta, x_items[-1])


def load_prompt_list(cobsat_dir: Path) -> list[dict]:
    """The benchmark's fixed prompt list from a CoBSAT checkout, validated."""
    path = next((cobsat_dir / p for p in (PROMPT_LIST, LEGACY_PROMPT_LIST) if (cobsat_dir / p).is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"No prompt list in {cobsat_dir}: expected {PROMPT_LIST} (from github.com/UW-Madison-Lee-Lab/CoBSAT). "
            f"--cobsat_dir is a CoBSAT checkout with the dataset unzipped into its datasets/ folder."
        )
    entries = json.loads(path.read_text())
    for number, entry in enumerate(entries):
        for key in ("x_list", "theta_list"):
            if sorted(entry.get(key, [])) != list(range(10)):
                raise ValueError(f"{path}: entry {number} {key} = {entry.get(key)} is not a permutation of 0..9.")
    return entries


def build_cases(cobsat_dir: Path, tasks: list[int], shots: list[int], num_prompts: int) -> list[Case]:
    """Every prompt of the chosen tasks and shot counts, in a fixed order (shot, task, index)."""
    entries = load_prompt_list(cobsat_dir)
    if num_prompts > len(entries):
        raise ValueError(f"--num_prompts {num_prompts} but the prompt list has {len(entries)} entries.")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"Unknown CoBSAT task ids {unknown}; tasks are 1..10.")
    dataset_dir = cobsat_dir / "datasets"
    cases = [build_case(dataset_dir, TASKS[t], shot, i, entries[i])
             for shot in shots for t in tasks for i in range(num_prompts)]
    missing = sorted({p for case in cases for p in case.image_paths if not p.is_file()})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} CoBSAT images are missing, e.g. {missing[0]}. Download datasets.zip from the Hugging "
            f"Face dataset yzeng58/CoBSAT and unzip it into {dataset_dir.parent} (giving {dataset_dir})."
        )
    return cases


def write_synthetic_dataset(cobsat_dir: Path, num_prompts: int = 10, size: int = 32, seed: int = 123) -> Path:
    """A CoBSAT-layout folder of tiny flat-coloured images and a prompt list, for offline smoke runs.

    Every (theme, attribute, object) image exists, as in the real dataset; each is one colour derived
    from its file name. The prompt list has `num_prompts` entries of random permutations.
    """
    for theme, object_space in THEMES.items():
        for obj in ITEMS[object_space]:
            folder = cobsat_dir / "datasets" / f"{theme}_{obj}"
            folder.mkdir(parents=True, exist_ok=True)
            for attribute in ITEMS[theme]:
                name = f"{attribute}_{obj}.jpg"
                code = zlib.crc32(name.encode())
                Image.new("RGB", (size, size), (code & 255, (code >> 8) & 255, (code >> 16) & 255)).save(folder / name)
    rng = random.Random(seed)
    entries = []
    for _ in range(num_prompts):
        x_list, theta_list = list(range(10)), list(range(10))
        rng.shuffle(x_list)
        rng.shuffle(theta_list)
        entries.append({"x_list": x_list, "theta_list": theta_list})
    (cobsat_dir / PROMPT_LIST).parent.mkdir(parents=True, exist_ok=True)
    (cobsat_dir / PROMPT_LIST).write_text(json.dumps(entries, indent=1))
    return cobsat_dir
