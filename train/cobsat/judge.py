"""The CoBSAT judge: a VLM answers two multiple-choice questions about each generated image.

Facts from the benchmark (github UW-Madison-Lee-Lab/CoBSAT, `evaluation_icl.py`, `load_models/call_llava.py`):

- Questions, options in the benchmark's item order, shown words for "3d"/"park":
  object:    "What is the main object in this image? Answer from the following options:  (1)leaf (2)hat ...
              (10)apple. Answer the number only and do not include any other texts (e.g., 1)."
  attribute: "What is the {theme} (of the main object) in this image? Answer from the following options: ..."
- The judge is `liuhaotian/llava-v1.5-13b` run by LLaVA's own code (submodule yzeng58/LLaVA,
  `llava/eval/run_llava.py`): fp16, one image and one question per call, greedy (temperature 0), up to
  512 new tokens, the `llava_v1` conversation ("{system} USER: <image>\\n{question} ASSISTANT:").
  `LlavaJudge` repeats that on the llava-hf port of the same weights (see its docstring).
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
from thinkdiff_core.devices import compute_device, resolve_dtype
from thinkdiff_core.hub import transformers_folder
from thinkdiff_core.processors import load_pil_image_processor
from thinkdiff_core.vlm import GenerationSettings, VisionLanguageModel

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
LLAVA_STOP = "</s>"
"""The `llava_v1` conversation's second separator: LLaVA stops at it and cuts it off the answer."""
LLAVA_QUESTION_LIMIT = 2047
"""The benchmark passes `prompt[:2047]` to its judge."""
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
    settings: dict

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
        self.generation = GenerationSettings(seed=0, temperature=0.0, max_new_tokens=max_new_tokens, min_new_tokens=0)

    @property
    def settings(self) -> dict:
        """What a report records about this judge (`VisionLanguageModel` batches all questions of a call)."""
        return {"judge": self.name, "dtype": str(self.vlm.model.dtype).removeprefix("torch."),
                "max_new_tokens": self.generation.max_new_tokens, "decoding": "greedy"}

    def answer(self, images: list[Image.Image], questions: list[str]) -> list[str]:
        prompts = [Prompt([image, question], system=QWEN_SYSTEM) for image, question in zip(images, questions)]
        return [text.strip() for text in self.vlm.generate(prompts, self.generation).texts]


class LlavaJudge:
    """LLaVA-1.5 judging as the benchmark's LLaVA code does it, through transformers' llava-hf port.

    The benchmark runs `liuhaotian/llava-v1.5-13b` with LLaVA's own `run_llava.eval_model`; llava-hf's
    folder holds the same weights. What that code does and this class repeats:
    - the `llava_v1` conversation (`llava_v1_prompt`), `<image>` then a newline before the question,
      the question cut at 2047 characters;
    - token ids from each side of `<image>` tokenized on its own (`llava_input_ids`), not the whole
      text at once as llava-hf's processor does: a Llama tokenizer then starts the text after the
      image with its word-start piece, which the processor's ids lack;
    - images padded to a square in the processor's mean colour (the checkpoint's `image_aspect_ratio`
      "pad") before the usual resize and crop;
    - fp16 weights, greedy, up to 512 new tokens, one (image, question) per call, the answer cut at
      the separator `</s>` and stripped.
    The port's vocabulary has rows for `<image>` and `<pad>` that the original model lacks: they are
    never generated (`suppress_tokens`). `batch_size` > 1 left-pads several calls into one; whether
    that answers as one per call does is measured by `bench/cobsat_judge_batching.py`.
    """

    def __init__(self, model, processor, name: str, max_new_tokens: int = JUDGE_MAX_NEW_TOKENS,
                 batch_size: int = 1) -> None:
        self.model, self.processor, self.name = model, processor, name
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        config = model.config
        grid = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        self.image_tokens = grid + (config.vision_feature_select_strategy == "full")
        tokenizer = processor.tokenizer
        self.added_token_ids = list(range(tokenizer.vocab_size, config.text_config.vocab_size))

    @classmethod
    def from_pretrained(cls, name_or_path: str = LLAVA_JUDGE_ID, name: str = "llava", dtype: str = "fp16",
                        device: str | None = None, max_new_tokens: int = JUDGE_MAX_NEW_TOKENS,
                        batch_size: int = 1) -> "LlavaJudge":
        """Load a llava-hf style folder or Hub id. The image processor is the PIL one (no torchvision needed)."""
        from transformers import LlavaForConditionalGeneration, LlavaProcessor

        folder = transformers_folder(name_or_path, LLAVA_JUDGE_ID, "models/llava-1.5-13b-hf")
        target = compute_device(device)
        model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=resolve_dtype(dtype, target))
        model.to(target).eval().requires_grad_(False)
        processor = LlavaProcessor.from_pretrained(folder, image_processor=load_pil_image_processor(folder))
        return cls(model, processor, name, max_new_tokens, batch_size)

    @property
    def settings(self) -> dict:
        """What a report records about this judge."""
        return {"judge": self.name, "dtype": str(self.model.dtype).removeprefix("torch."),
                "batch_size": self.batch_size, "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def input_ids(self, question: str) -> list[int]:
        return llava_input_ids(llava_v1_prompt(question), self.processor.tokenizer, self.model.config.image_token_index,
                               self.image_tokens)

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        processor = self.processor.image_processor
        squares = [pad_to_square(image, tuple(int(255 * m) for m in processor.image_mean)) for image in images]
        pixels = processor(images=squares, return_tensors="pt")["pixel_values"]
        return pixels.to(self.model.device, self.model.dtype)

    def answer(self, images: list[Image.Image], questions: list[str]) -> list[str]:
        answers = []
        for start in range(0, len(images), self.batch_size):
            answers += self._generate(images[start:start + self.batch_size], questions[start:start + self.batch_size])
        return answers

    def _generate(self, images: list[Image.Image], questions: list[str]) -> list[str]:
        rows = [self.input_ids(question) for question in questions]
        width, pad = max(map(len, rows)), self.processor.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows], device=self.model.device)
        attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows],
                                      device=self.model.device)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, pixel_values=self.pixel_values(images),
                do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                suppress_tokens=self.added_token_ids or None, stop_strings=[LLAVA_STOP],
                tokenizer=self.processor.tokenizer,
            )
        texts = self.processor.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        return [text.strip().removesuffix(LLAVA_STOP).strip() for text in texts]


def llava_v1_prompt(question: str) -> str:
    """The text LLaVA's `llava_v1` conversation renders for one image and one question.

    System sentence, separator " ", "USER: " + "<image>\\n" + question, " ", "ASSISTANT:" (the
    benchmark cuts the question at 2047 characters before it is placed).
    """
    return f"{LLAVA_SYSTEM} USER: <image>\n{question[:LLAVA_QUESTION_LIMIT]} ASSISTANT:"


def llava_input_ids(prompt: str, tokenizer, image_token_id: int, image_tokens: int) -> list[int]:
    """Token ids as LLaVA builds them: each `<image>`-separated chunk tokenized alone, the first with its
    BOS and the others without theirs, `image_tokens` image ids (the port's expanded placeholder) between."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        starts_with_bos = bool(chunk) and chunk[0] == tokenizer.bos_token_id
        ids += [image_token_id] * image_tokens + list(chunk[1:] if starts_with_bos else chunk)
    return ids


def pad_to_square(image: Image.Image, colour: tuple[int, ...]) -> Image.Image:
    """The image centred on a square of the given colour (LLaVA-1.5's "pad" aspect ratio)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), colour)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square
