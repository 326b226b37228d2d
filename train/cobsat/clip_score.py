"""CoBSAT's secondary metric: CLIP image-text similarity, as the benchmark computes it beside accuracy.

Facts from the benchmark (`evaluation_icl.py`, `eval_clip` in image mode, `check_single_output`):
- the model is `openai/clip-vit-base-patch32`;
- the texts are [detail, object, "{detail} {object}"] followed by the ten object items and the ten
  attribute items (item names as stored, "3d" and "park" included). Of the ground truth, the side the
  prompt's words come from is the query word as shown ("wireframe"), the inferred side its item name;
- CLIPProcessor pads and truncates the texts at 77 tokens; a text's similarity is CLIP's logit scale
  times the cosine of its embedding and the image's, floored at 0;
- `clip_similarity_overall` is the "{detail} {object}" text's; `clip_correct`: the most similar object
  item and the most similar attribute item are both the targets;
- a missing image scores 0 and is not correct; the summary averages over all prompts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from thinkdiff_core.devices import compute_device
from thinkdiff_core.hub import transformers_folder
from thinkdiff_core.processors import load_pil_image_processor

from .tasks import ITEMS, Case

CLIP_SCORE_ID = "openai/clip-vit-base-patch32"
MISSING_SCORE = {"clip_similarity_overall": 0.0, "clip_similarity_object": 0.0, "clip_similarity_attribute": 0.0,
                 "clip_correct": False, "missing": True}


def ground_truth(case: Case) -> tuple[str, str]:
    """(detail, object) as the benchmark writes them: the query word as shown, the inferred side as an item."""
    query_word = case.words[-1]
    return (case.theta, query_word) if case.task.words_are_objects else (query_word, case.theta)


class ClipScorer:
    """The benchmark's CLIP similarity of generated images to their targets."""

    def __init__(self, model, processor) -> None:
        self.model, self.processor = model, processor

    @classmethod
    def from_pretrained(cls, name_or_path: str = CLIP_SCORE_ID, device: str | None = None) -> "ClipScorer":
        from transformers import CLIPModel, CLIPProcessor

        folder = transformers_folder(name_or_path, CLIP_SCORE_ID, "models/clip-vit-base-patch32")
        model = CLIPModel.from_pretrained(folder).to(compute_device(device)).eval().requires_grad_(False)
        return cls(model, CLIPProcessor.from_pretrained(folder, image_processor=load_pil_image_processor(folder)))

    @torch.no_grad()
    def score(self, case: Case, image: Image.Image) -> dict:
        detail, obj = ground_truth(case)
        objects, details = ITEMS[case.task.object_space], ITEMS[case.task.theme]
        inputs = self.processor(text=[detail, obj, f"{detail} {obj}", *objects, *details], images=image,
                                return_tensors="pt", padding=True, truncation=True, max_length=77).to(self.model.device)
        output = self.model(**inputs)
        similarity = (output.text_embeds @ output.image_embeds[0] * self.model.logit_scale.exp()).clamp(min=0).cpu()
        object_choice = int(similarity[3:3 + len(objects)].argmax())
        detail_choice = int(similarity[3 + len(objects):].argmax())
        return {"clip_similarity_overall": float(similarity[2]), "clip_similarity_object": float(similarity[1]),
                "clip_similarity_attribute": float(similarity[0]),
                "clip_correct": objects[object_choice] == case.target_object and details[detail_choice] == case.target_attribute,
                "missing": False}

    def score_files(self, cases: list[Case], paths: list[Path]) -> list[dict]:
        from thinkdiff_core.images import open_image

        return [self.score(case, open_image(path)) if path.is_file() else dict(MISSING_SCORE)
                for case, path in zip(cases, paths)]
