"""CoBSAT evaluation of ThinkDiff: generate, judge, report.

    python -m train.cobsat --cobsat_dir ~/cobsat --out runs/cobsat --shots 2,4
    python -m train.cobsat --tiny --out /tmp/cobsat-smoke          # offline smoke run on a synthetic folder
    python -m train.cobsat --config cobsat.yaml --judge.kind qwen   # options from a file, then flags

Every option is a field of `CobsatConfig` (`options.py`), as in the training tools (`train.config`):
sections are dotted flags (`--generation.steps 4`) and keys of the `--config` YAML/JSON file; lists are
`a,b` or `[a, b]`; an option left at null takes the reference value (or the tiny run's with `--tiny`).

`--cobsat_dir` is a checkout of github.com/UW-Madison-Lee-Lab/CoBSAT (it holds the fixed prompt list
`load_datasets/prompts_list_default.json`) with the dataset's `datasets.zip` (Hugging Face dataset
yzeng58/CoBSAT) unzipped into it as `datasets/`.

Stages (`--stages`, default all four):
- generate: one image per prompt through `ThinkDiffPipeline`, batched per task, written as
  `OUT/images/shot_{s}/task_{t}/{benchmark name}.jpg` (+ `.json` with the VLM's answer). Resumable:
  a batch whose images all exist is skipped. Shardable: `--shard i --num_shards n` takes every n-th
  batch, so n processes (GPUs, nodes) split the work; the seeds depend on the prompt, not the shard.
- judge: the two multiple-choice questions per image (LLaVA-1.5-13B as the benchmark runs it: fp16, one
  image per call; or `--judge.kind qwen`), saved per image under `OUT/judgements/{judge}/`, the judge's
  settings in `OUT/judge_{judge}.json` (a later run with other settings is refused); resumable and
  shardable alike.
- clip: the benchmark's secondary metric, CLIP ViT-B/32 similarity of each image to its target text
  (`clip_score.py`), saved per image under `OUT/clip_scores/`;
- report: per-task and average accuracy per shot count (a missing image counts as wrong), written as
  `OUT/report_{judge}.json` and `.md` next to the paper's numbers. Run it once, after all shards.

Methods (`--generation.methods`, any of them in one run, on the same prompts, seeds and VLM answers; the
report puts them side by side): `thinkdiff` (the paper; files directly under OUT), `vlm-text` (the VLM's
answer as a plain FLUX prompt) and `thinkdiff+text` (the aligned answer followed by the T5 text of
`--generation.text_prompt`, the reference's multi-image-input script), each under `OUT/methods/{method}/`.

The generation settings are recorded in `run.json` of each method's folder; a later run with other
settings is refused rather than mixing two recipes in one folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from thinkdiff_core.cli import ShowsDefaults
from thinkdiff_core.files import check_writable_folder
from thinkdiff_core.images import open_image, save_image
from thinkdiff_core.pipeline import ThinkDiffPipeline, ThinkDiffRequest
from thinkdiff_core.progress import token_bar
from thinkdiff_core.vlm import GenerationSettings, VisionLanguageModel

from .. import config as cfg
from .layout import (clip_file, image_file, judge_settings_file, judgement_file, method_root, unjudged, write_json,
                     write_text)
from .report import markdown, report
from .options import CobsatConfig, GenerationOptions, resolved
from .tasks import Case, build_cases, write_synthetic_dataset
from .clip_score import CLIP_SCORE_ID, ClipScorer
from .judge import LLAVA_JUDGE_ID, QWEN_JUDGE_ID, Judge, LlavaJudge, QwenJudge, judge_images


@dataclass(frozen=True)
class Batch:
    """Consecutive prompts of one (shot, task): generated together, with one VLM seed."""

    number: int
    cases: tuple[Case, ...]


def make_batches(cases: list[Case], batch_size: int) -> list[Batch]:
    """Batches never mix tasks or shot counts (one image count per VLM batch) and never depend on sharding."""
    batches, current = [], []
    for case in cases:
        if current and (len(current) == batch_size or (case.shot, case.task.id) != (current[0].shot, current[0].task.id)):
            batches.append(tuple(current))
            current = []
        current.append(case)
    if current:
        batches.append(tuple(current))
    return [Batch(number, group) for number, group in enumerate(batches)]


def seed_for(base: int, *parts: int) -> int:
    """A stable seed for a prompt or batch (crc32: Python's `hash` is salted per process)."""
    return zlib.crc32("/".join(str(p) for p in (base, *parts)).encode())


def text_prompt(template: str, case: Case) -> str:
    """`--generation.text_prompt` for one case: `{word}` is its query word."""
    return template.format(word=case.words[-1])


# --- generate ---

def generation_config(config: CobsatConfig, method: str = "thinkdiff") -> dict:
    """What `run.json` records (its keys are those of the first runs: existing folders stay resumable)."""
    gen = config.generation
    models = {"models": "tiny"} if config.tiny else {
        "vlm": gen.vlm, "aligner": gen.aligner, "flux": gen.flux, "dtype": gen.dtype}
    if method != "thinkdiff":
        models["method"] = method
    if method == "thinkdiff+text":
        models["text_prompt"] = gen.text_prompt
    return models | {
        "seed": gen.seed, "batch_size": gen.batch_size, "steps": gen.steps, "guidance": gen.guidance,
        "size": gen.size, "temperature": gen.temperature, "top_p": gen.top_p,
        "max_new_tokens": gen.max_new_tokens, "min_new_tokens": gen.min_new_tokens,
    }


def check_recorded(path: Path, config: dict, what: str) -> None:
    """Record a stage's settings on first use; refuse to add to files made with other settings."""
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = {k: (recorded.get(k), v) for k, v in config.items() if recorded.get(k) != v}
        if changed:
            details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"{path.parent} holds {what} made with other settings ({details}). Resume with the recorded "
                f"settings (see {path}) or use a new --out."
            )
    else:
        write_json(path, config)


def request_for(case: Case) -> ThinkDiffRequest:
    """ThinkDiff's CoBSAT request: the case's images and words in the reference reasoning prompt."""
    return ThinkDiffRequest([open_image(p) for p in case.image_paths], list(case.words), preset="cobsat_reasoning")


def missing_methods(batch: Batch, out: Path, methods: list[str]) -> list[str]:
    return [m for m in methods if not all(image_file(method_root(out, m), c).is_file() for c in batch.cases)]


def unfinished(batches: list[Batch], out: Path, methods: list[str]) -> list[Batch]:
    return [b for b in batches if missing_methods(b, out, methods)]


def generate(pipeline: ThinkDiffPipeline, batches: list[Batch], out: Path, gen: GenerationOptions) -> int:
    """Generate the given batches, writing only images that do not exist yet; return how many were written.

    The VLM answers once per batch; every method that still misses an image of the batch makes its
    images from that one answer, with the same image seeds."""
    written = 0
    for batch in tqdm(batches, desc="generate", unit="batch"):
        first = batch.cases[0]
        settings = GenerationSettings(
            seed=seed_for(gen.seed, first.shot, first.task.id, first.index), temperature=gen.temperature,
            top_p=gen.top_p, max_new_tokens=gen.max_new_tokens, min_new_tokens=gen.min_new_tokens,
        )
        requests = [request_for(case) for case in batch.cases]
        seeds = [seed_for(gen.seed, c.shot, c.task.id, c.index) for c in batch.cases]
        with token_bar("VLM answers") as on_token:
            tokens = pipeline.feature_tokens(requests, settings, on_token)
        for method in missing_methods(batch, out, gen.methods):
            method_requests = requests if method != "thinkdiff+text" else [
                replace(request, prompt=text_prompt(gen.text_prompt, case)) for request, case in zip(requests, batch.cases)]
            inputs = pipeline.flux_inputs(tokens, method_requests, gen.guidance, method)
            images = pipeline.sample(inputs, seeds, gen.steps, gen.size, gen.size, progress=False)
            for case, request, image, text in zip(batch.cases, method_requests, images, tokens.texts):
                target = image_file(method_root(out, method), case)
                if target.is_file():
                    continue  # written before an interruption; the batch was redone only for its missing images
                record = {"task": case.task.name, "shot": case.shot, "index": case.index, "words": list(case.words),
                          "vlm_text": text} | ({"text_prompt": request.prompt} if request.prompt else {})
                write_json(target.with_suffix(".json"), record)
                save_image(image, target)
                written += 1
    return written


# --- judge ---

def judge(judge_model: Judge, cases: list[Case], out: Path, batch_size: int) -> int:
    """Judge the given cases' images (both questions each, `batch_size` images per call); return how many."""
    for start in tqdm(range(0, len(cases), batch_size), desc="judge", unit="batch"):
        group = cases[start:start + batch_size]
        for case, verdict in zip(group, judge_images(judge_model, group, [image_file(out, c) for c in group])):
            write_json(judgement_file(out, judge_model.name, case), verdict.to_json())
    return len(cases)


# --- clip ---

def clip_score(scorer: ClipScorer, cases: list[Case], out: Path) -> int:
    """The benchmark's CLIP similarity of each given case's image; return how many were scored."""
    todo = [c for c in cases if image_file(out, c).is_file() and not clip_file(out, c).is_file()]
    for case in tqdm(todo, desc="clip", unit="image"):
        score, = scorer.score_files([case], [image_file(out, case)])
        write_json(clip_file(out, case), score)
    return len(todo)


# --- report ---

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.cobsat", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowsDefaults)
    cfg.add_arguments(parser, CobsatConfig)
    return parser


def judge_name(config: CobsatConfig) -> str:
    """Judgements and reports are filed under the judge's name, so two judges never mix."""
    judge = config.judge
    default = QWEN_JUDGE_ID if judge.kind == "qwen" else LLAVA_JUDGE_ID
    return f"{judge.kind}-{'tiny' if config.tiny else Path(judge.model or default).name}"


def load_judge(config: CobsatConfig, tiny_vlm: Path | None) -> Judge:
    name, judge, device = judge_name(config), config.judge, config.generation.device
    if judge.kind == "qwen":
        source = tiny_vlm if tiny_vlm is not None else (judge.model or QWEN_JUDGE_ID)
        dtype = "fp32" if tiny_vlm else (judge.dtype or config.generation.dtype)
        vlm = VisionLanguageModel.from_pretrained(source, dtype=dtype, device=device)
        return QwenJudge(vlm, name, judge.max_new_tokens)
    if tiny_vlm is not None:
        raise ValueError("--tiny judges with the tiny Qwen VLM; use --judge.kind qwen (the default with --tiny).")
    return LlavaJudge.from_pretrained(judge.model or LLAVA_JUDGE_ID, name, judge.dtype or "fp16", device,
                                      judge.max_new_tokens, judge.batch_size)


def text_methods(gen: GenerationOptions) -> bool:
    """Whether a method needs FLUX's T5 (the paper's alone never loads it)."""
    return any(method != "thinkdiff" for method in gen.methods)


def load_pipeline(gen: GenerationOptions, tiny_paths: dict[str, Path] | None) -> ThinkDiffPipeline:
    if tiny_paths:
        return ThinkDiffPipeline.from_pretrained(tiny_paths["flux"], tiny_paths["aligner"], tiny_paths["vlm"],
                                                 dtype="fp32", device="cpu", load_t5=text_methods(gen))
    return ThinkDiffPipeline.from_pretrained(gen.flux, gen.aligner, gen.vlm, dtype=gen.dtype, device=gen.device,
                                             offload=gen.offload, load_t5=text_methods(gen))


def clip_model(config: CobsatConfig, workdir: Path) -> str | Path:
    if config.tiny:
        from thinkdiff_core.testing.tiny import write_tiny_clip

        return write_tiny_clip(workdir / "clip-tiny")
    return config.judge.clip_model or CLIP_SCORE_ID


def free_memory() -> None:
    """Let one stage's models go before the next stage loads its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(config: CobsatConfig, workdir: Path) -> dict:
    """Run the chosen stages on a resolved config (`options.resolved`); return what was done."""
    out = check_writable_folder(config.out, "--out")  # before any model loads: hours of images must have somewhere to go
    cobsat_dir, gen = Path(config.cobsat_dir).expanduser(), config.generation
    if config.tiny and not (cobsat_dir / "datasets").is_dir():
        write_synthetic_dataset(cobsat_dir, num_prompts=max(config.num_prompts, 10))
    cases = build_cases(cobsat_dir, config.tasks, config.shots, config.num_prompts)
    batches = [b for b in make_batches(cases, gen.batch_size) if b.number % config.num_shards == config.shard]
    mine = [case for batch in batches for case in batch.cases]
    summary: dict = {"prompts": len(cases), "shard_prompts": len(mine), "generated": 0, "judged": 0}
    tiny_paths: dict[str, Path] = {}

    def tiny_models() -> dict[str, Path] | None:
        """Written on first use only: a run with nothing left to do loads no model at all."""
        if config.tiny and not tiny_paths:
            from thinkdiff_core.testing.tiny_pipeline import write_tiny_thinkdiff

            tiny_paths.update(write_tiny_thinkdiff(workdir))
        return tiny_paths or None

    if "generate" in config.stages:
        for method in gen.methods:
            check_recorded(method_root(out, method) / "run.json", generation_config(config, method), "images")
        todo = unfinished(batches, out, gen.methods)
        if todo:
            summary["generated"] = generate(load_pipeline(gen, tiny_models()), todo, out, gen)
            free_memory()
    if "judge" in config.stages:
        name = judge_name(config)
        todo = {m: unjudged(mine, method_root(out, m), name) for m in gen.methods}
        if any(todo.values()):
            tiny = tiny_models()
            judge_model = load_judge(config, tiny["vlm"] if tiny else None)
            check_recorded(judge_settings_file(out, judge_model.name), judge_model.settings, "judgements")
            summary["judged"] = sum(judge(judge_model, cases_left, method_root(out, m), config.judge.batch_size)
                                    for m, cases_left in todo.items() if cases_left)
            free_memory()
    if "clip" in config.stages:
        roots = [method_root(out, m) for m in gen.methods]
        if any(image_file(r, c).is_file() and not clip_file(r, c).is_file() for r in roots for c in mine):
            scorer = ClipScorer.from_pretrained(str(clip_model(config, workdir)), device=gen.device)
            summary["clip_scored"] = sum(clip_score(scorer, mine, root) for root in roots)
            free_memory()
    if "report" in config.stages:
        if config.num_shards > 1:
            print("report skipped: run --stages report once all shards have finished (without --shard).")
        else:
            name = judge_name(config)
            results = report(cases, out, name, gen.methods)
            write_json(out / f"report_{name}.json", results)
            write_text(out / f"report_{name}.md", markdown(results))
            summary["report"] = str(out / f"report_{name}.md")
            summary["averages"] = {m: {shot: round(r["average"], 4) for shot, r in table["shots"].items()}
                                   for m, table in results["methods"].items()}
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> str:
        config = resolved(cfg.resolve(CobsatConfig, args))
        if config.tiny:
            torch.set_num_threads(1)  # tiny models only lose time to thread hand-offs
        with tempfile.TemporaryDirectory(prefix="cobsat-tiny-") as workdir:
            summary = run(config, Path(workdir))
        return "\n".join(f"{key}: {value}" for key, value in summary.items())

    return cfg.run_tool(work)


if __name__ == "__main__":
    sys.exit(main())
