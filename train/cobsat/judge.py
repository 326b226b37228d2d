"""The CoBSAT judge: a VLM answers two multiple-choice questions about each generated image.

Facts from the benchmark (github UW-Madison-Lee-Lab/CoBSAT, `evaluation_icl.py`, `load_models/call_llava.py`):

- Questions, options in the benchmark's item order, shown words for "3d"/"park":
  object:    "What is the main object in this image? Answer from the following options:  (1)leaf (2)hat ...
              (10)apple. Answer the number only and do not include any other texts (e.g., 1)."
  attribute: "What is the {theme} (of the main object) in this image? Answer from the following options: ..."
- The judge is LLaVA-1.5-13B, greedy (temperature 0), up to 512 new tokens, in the LLaVA-v1 conversation
  format (system sentence, "USER: <image>\\n{question} ASSISTANT:").
- Parsing: all digits of the answer, concatenated, read as one number; an option only if it is 1..10,
  anything else is no answer. An image is correct only if both answers are right; a missing image is
  wrong.

`QwenJudge` runs the same questions through our `VisionLanguageModel` (greedy); its numbers are not
comparable to the paper's, which used LLaVA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from thinkdiff_core.images import open_image
from thinkdiff_core.prompts import Prompt
from thinkdiff_core.vlm import (GenerationSettings, VisionLanguageModel, compute_device, load_pil_image_processor,
                                resolve_dtype, resolve_model_folder)

from .tasks import ITEMS, Case, word

LLAVA_JUDGE_ID = "llava-hf/llava-1.5-13b-hf"
QWEN_JUDGE_ID = "Qwen/Qwen2-VL-7B-Instruct"
JUDGE_MAX_NEW_TOKENS = 512
LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                "helpful, detailed, and polite answers to the human's questions.")
QWEN_SYSTEM = ("You are a professional assistant and always answer my question directly and perfectly without any "
               "excuses. If I ask you to predict, you should always give me the prediction with the highest "
               "probability or even random guess.")
"""The system prompt the benchmark gives its Qwen-VL judge."""
NO_ANSWER = -1


def _options(items: list[str]) -> str:
    return "".join(f" ({number}){word(item)}" for number, item in enumerate(items, start=1))


def questions(case: Case) -> dict[str, str]:
    """The benchmark's two questions for this case's theme."""
    tail = ". Answer the number only and do not include any other texts (e.g., 1)."
    lead = " Answer from the following options: "
    return {
        "object": "What is the main object in this image?" + lead + _options(ITEMS[case.task.object_space]) + tail,
        "attribute": f"What is the {case.task.theme} (of the main object) in this image?" + lead
                     + _options(ITEMS[case.task.theme]) + tail,
    }


def parse_choice(response: str, num_options: int = 10) -> int:
    """The benchmark's reading of an answer: every digit concatenated; an option 1..n or `NO_ANSWER`."""
    digits = "".join(c for c in response if c.isdigit())
    return int(digits) if digits and 1 <= int(digits) <= num_options else NO_ANSWER


@dataclass
class Judgement:
    object_response: str | None
    attribute_response: str | None
    object_answer: int
    attribute_answer: int
    object_correct: bool
    attribute_correct: bool
    missing: bool = False

    @property
    def correct(self) -> bool:
        return self.object_correct and self.attribute_correct

    def to_json(self) -> dict:
        return asdict(self) | {"correct": self.correct}

    @classmethod
    def from_json(cls, data: dict) -> "Judgement":
        return cls(**{k: v for k, v in data.items() if k != "correct"})


MISSING = Judgement(None, None, NO_ANSWER, NO_ANSWER, False, False, missing=True)


def grade(case: Case, object_response: str, attribute_response: str) -> Judgement:
    """Score two answers against the case's target object and attribute."""
    object_answer = parse_choice(object_response, len(ITEMS[case.task.object_space]))
    attribute_answer = parse_choice(attribute_response, len(ITEMS[case.task.theme]))
    return Judgement(
        object_response, attribute_response, object_answer, attribute_answer,
        object_answer == ITEMS[case.task.object_space].index(case.target_object) + 1,
        attribute_answer == ITEMS[case.task.theme].index(case.target_attribute) + 1,
    )


class Judge(Protocol):
    name: str

    def answer(self, images: list[Image.Image], questions: list[str]) -> list[str]:
        """One greedy answer per (image, question) pair."""


def judge_images(judge: Judge, cases: list[Case], image_paths: list[Path]) -> list[Judgement]:
    """Judge a batch: both questions of every present image in one call; missing images are wrong."""
    present = [(case, path) for case, path in zip(cases, image_paths) if path.is_file()]
    images, texts = [], []
    for case, path in present:
        image, asked = open_image(path), questions(case)
        images += [image, image]
        texts += [asked["object"], asked["attribute"]]
    answers = iter(judge.answer(images, texts) if images else [])
    graded = {path: grade(case, next(answers), next(answers)) for case, path in present}
    return [graded.get(path, MISSING) for path in image_paths]


class QwenJudge:
    """The benchmark's questions answered greedily by a Qwen-VL model through `VisionLanguageModel`."""

    def __init__(self, vlm: VisionLanguageModel, name: str, max_new_tokens: int = JUDGE_MAX_NEW_TOKENS) -> None:
        self.vlm, self.name = vlm, name
        self.settings = GenerationSettings(seed=0, temperature=0.0, max_new_tokens=max_new_tokens, min_new_tokens=0)

    def answer(self, images: list[Image.Image], questions: list[str]) -> list[str]:
        prompts = [Prompt([image, question], system=QWEN_SYSTEM) for image, question in zip(images, questions)]
        return [text.strip() for text in self.vlm.generate(prompts, self.settings).texts]


class LlavaJudge:
    """LLaVA-1.5 (transformers' `LlavaForConditionalGeneration`), greedy, in the LLaVA-v1 chat format."""

    def __init__(self, model, processor, name: str, max_new_tokens: int = JUDGE_MAX_NEW_TOKENS) -> None:
        self.model, self.processor, self.name, self.max_new_tokens = model, processor, name, max_new_tokens

    @classmethod
    def from_pretrained(cls, name_or_path: str = LLAVA_JUDGE_ID, name: str = "llava", dtype: str = "auto",
                        device: str | None = None, max_new_tokens: int = JUDGE_MAX_NEW_TOKENS) -> "LlavaJudge":
        """Load a llava-hf style folder or Hub id. The image processor is the PIL one (no torchvision needed)."""
        from transformers import LlavaForConditionalGeneration, LlavaProcessor

        folder = resolve_model_folder(name_or_path)
        target = compute_device(device)
        model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=resolve_dtype(dtype, target))
        model.to(target).eval().requires_grad_(False)
        processor = LlavaProcessor.from_pretrained(folder, image_processor=load_pil_image_processor(folder))
        return cls(model, processor, name, max_new_tokens)

    def answer(self, images: list[Image.Image], questions: list[str]) -> list[str]:
        texts = [f"{LLAVA_SYSTEM} USER: <image>\n{question} ASSISTANT:" for question in questions]
        self.processor.tokenizer.padding_side = "left"
        inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True).to(self.model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            output = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
