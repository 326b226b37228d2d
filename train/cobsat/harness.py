"""CoBSAT evaluation of ThinkDiff: generate, judge, report.

    python -m train.cobsat --cobsat-dir ~/cobsat --out runs/cobsat --shots 2 4
    python -m train.cobsat --tiny --out /tmp/cobsat-smoke          # offline smoke run on a synthetic folder

`--cobsat-dir` is a checkout of github.com/UW-Madison-Lee-Lab/CoBSAT (it holds the fixed prompt list
`load_datasets/prompts_list_default.json`) with the dataset's `datasets.zip` (Hugging Face dataset
yzeng58/CoBSAT) unzipped into it as `datasets/`.

Stages (`--stages`, default all three):
- generate: one image per prompt through `ThinkDiffPipeline`, batched per task, written as
  `OUT/images/shot_{s}/task_{t}/{benchmark name}.jpg` (+ `.json` with the VLM's answer). Resumable:
  a batch whose images all exist is skipped. Shardable: `--shard i --num-shards n` takes every n-th
  batch, so n processes (GPUs, nodes) split the work; the seeds depend on the prompt, not the shard.
- judge: the two multiple-choice questions per image (LLaVA-1.5-13B as the benchmark runs it: fp16, one
  image per call; or `--judge qwen`), saved per image under `OUT/judgements/{judge}/`, the judge's
  settings in `OUT/judge_{judge}.json` (a later run with other settings is refused); resumable and
  shardable alike.
- clip: the benchmark's secondary metric, CLIP ViT-B/32 similarity of each image to its target text
  (`clip_score.py`), saved per image under `OUT/clip_scores/`;
- report: per-task and average accuracy per shot count (a missing image counts as wrong), written as
  `OUT/report_{judge}.json` and `.md` next to the paper's numbers. Run it once, after all shards.

Methods (`--methods`, any of them in one run, on the same prompts, seeds and VLM answers; the report
puts them side by side): `thinkdiff` (the paper; files directly under OUT), `vlm-text` (the VLM's answer
as a plain FLUX prompt) and `thinkdiff+text` (the aligned answer followed by the T5 text of
`--text-prompt`, the reference's multi-image-input script), each under `OUT/methods/{method}/`.

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

from thinkdiff_core.cli import ShowsDefaults, positive_int, run_cli
from thinkdiff_core.files import check_writable_folder
from thinkdiff_core.images import open_image, save_image
from thinkdiff_core.pipeline import (
    FLUX_DEV_ID, METHODS, OFFICIAL_LVLM_ALIGNER, OFFLOAD_MODES, QWEN2_VL_ID, REFERENCE_GUIDANCE, REFERENCE_SIZE, REFERENCE_STEPS,
    ThinkDiffPipeline, ThinkDiffRequest,
)
from thinkdiff_core.devices import DTYPES
from thinkdiff_core.progress import token_bar
from thinkdiff_core.vlm import GenerationSettings, VisionLanguageModel

from .layout import (clip_file, image_file, judge_settings_file, judgement_file, method_root, unjudged, write_json,
                     write_text)
from .report import markdown, report
from .tasks import SHOTS, TASKS, Case, build_cases, write_synthetic_dataset
from .clip_score import CLIP_SCORE_ID, ClipScorer
from .judge import LLAVA_JUDGE_ID, QWEN_JUDGE_ID, Judge, LlavaJudge, QwenJudge, judge_images

STAGES = ("generate", "judge", "clip", "report")
TINY = {"num_prompts": 2, "size": 64, "steps": 2, "max_new_tokens": 16, "judge_max_new_tokens": 8}


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
    """`--text-prompt` for one case: `{word}` is its query word."""
    return template.format(word=case.words[-1])


# --- generate ---

def generation_config(args: argparse.Namespace, method: str = "thinkdiff") -> dict:
    models = {"models": "tiny"} if args.tiny else {
        "vlm": args.vlm, "aligner": args.aligner, "flux": args.flux, "dtype": args.dtype}
    if method != "thinkdiff":
        models["method"] = method
    if method == "thinkdiff+text":
        models["text_prompt"] = args.text_prompt
    return models | {
        "seed": args.seed, "batch_size": args.batch_size, "steps": args.steps, "guidance": args.guidance,
        "size": args.size, "temperature": args.temperature, "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens, "min_new_tokens": args.min_new_tokens,
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


def generate(pipeline: ThinkDiffPipeline, batches: list[Batch], out: Path, args: argparse.Namespace) -> int:
    """Generate the given batches, writing only images that do not exist yet; return how many were written.

    The VLM answers once per batch; every method that still misses an image of the batch makes its
    images from that one answer, with the same image seeds."""
    written = 0
    for batch in tqdm(batches, desc="generate", unit="batch"):
        first = batch.cases[0]
        settings = GenerationSettings(
            seed=seed_for(args.seed, first.shot, first.task.id, first.index), temperature=args.temperature,
            top_p=args.top_p, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
        )
        requests = [request_for(case) for case in batch.cases]
        seeds = [seed_for(args.seed, c.shot, c.task.id, c.index) for c in batch.cases]
        with token_bar("VLM answers") as on_token:
            tokens = pipeline.feature_tokens(requests, settings, on_token)
        for method in missing_methods(batch, out, args.methods):
            method_requests = requests if method != "thinkdiff+text" else [
                replace(request, prompt=text_prompt(args.text_prompt, case)) for request, case in zip(requests, batch.cases)]
            inputs = pipeline.flux_inputs(tokens, method_requests, args.guidance, method)
            images = pipeline.sample(inputs, seeds, args.steps, args.size, args.size, progress=False)
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
    parser = argparse.ArgumentParser(prog="python -m train.cobsat", description=__doc__.splitlines()[0],
                                     formatter_class=ShowsDefaults)
    defaults = GenerationSettings()
    parser.add_argument("--cobsat-dir", type=Path, help="CoBSAT checkout with datasets/ and load_datasets/")
    parser.add_argument("--out", type=Path, required=True, help="run folder (images, judgements, reports)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the stages to run; generate, judge and clip skip what --out already holds")
    parser.add_argument("--tasks", nargs="+", type=int, default=list(TASKS), help="task ids 1..10")
    parser.add_argument("--shots", nargs="+", type=int, default=list(SHOTS), help="in-context examples per prompt")
    parser.add_argument("--num-prompts", type=positive_int, default=None, help="first N prompts per task (default 1000)")
    parser.add_argument("--shard", type=int, default=0, help="this process's share of the prompts, 0..--num-shards - 1")
    parser.add_argument("--num-shards", type=positive_int, default=1, help="processes splitting the prompts (one per GPU)")
    parser.add_argument("--tiny", action="store_true", help="synthetic dataset + tiny models, offline (smoke run)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--vlm", default=None, help=f"VLM folder or Hub id (default {QWEN2_VL_ID})")
    gen.add_argument("--aligner", default=None, help=f"aligner file or <repo>/<file> (default {OFFICIAL_LVLM_ALIGNER})")
    gen.add_argument("--flux", default=None, help=f"FLUX folder or Hub id (default {FLUX_DEV_ID})")
    gen.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                     help="what the models compute in (auto: bf16 on a GPU, fp32 on the CPU)")
    gen.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    gen.add_argument("--offload", choices=OFFLOAD_MODES, default="none",
                     help="model: whole models visit the GPU in turn; sequential: layer by layer")
    gen.add_argument("--methods", nargs="+", choices=METHODS, default=["thinkdiff"],
                     help="compared on the same prompts, seeds and VLM answers (see above)")
    gen.add_argument("--text-prompt", default="{word}",
                     help="thinkdiff+text: the text after the aligned answer; {word} is the query word")
    gen.add_argument("--batch-size", type=positive_int, default=8, help="prompts the VLM answers and FLUX draws at once")
    gen.add_argument("--seed", type=int, default=defaults.seed, help="the run's seed; each prompt's seeds derive from it")
    gen.add_argument("--steps", type=positive_int, default=None, help=f"FLUX steps (default {REFERENCE_STEPS})")
    gen.add_argument("--guidance", type=float, default=REFERENCE_GUIDANCE, help="FLUX's distilled guidance scale")
    gen.add_argument("--size", type=positive_int, default=None, help=f"image height and width (default {REFERENCE_SIZE})")
    gen.add_argument("--temperature", type=float, default=defaults.temperature, help="VLM sampling temperature (0: greedy)")
    gen.add_argument("--top-p", type=float, default=defaults.top_p, help="VLM nucleus sampling: the share of probability kept")
    gen.add_argument("--max-new-tokens", type=positive_int, default=None,
                     help=f"the VLM answer's length in tokens (default {defaults.max_new_tokens})")
    gen.add_argument("--min-new-tokens", type=int, default=None, help="the VLM answer's least length (default: --max-new-tokens)")
    jud = parser.add_argument_group("judge")
    jud.add_argument("--judge", choices=["llava", "qwen"], default=None, help="the VQA model that reads each image (default llava, qwen with --tiny)")
    jud.add_argument("--judge-model", default=None, help=f"its folder or Hub id (default {LLAVA_JUDGE_ID} / {QWEN_JUDGE_ID})")
    jud.add_argument("--clip-model", default=None, help=f"CLIP for the similarity metric (default {CLIP_SCORE_ID})")
    jud.add_argument("--judge-dtype", default=None, choices=["auto", *DTYPES],
                     help="what the judge computes in (default fp16 for llava, the benchmark's; --dtype for qwen)")
    jud.add_argument("--judge-batch-size", type=positive_int, default=1,
                     help="images per judge call (default 1, as the benchmark; see bench/cobsat_judge_batching.py)")
    jud.add_argument("--judge-max-new-tokens", type=positive_int, default=None, help="the judge answer's length (default 512, the benchmark's)")
    return parser


def resolve_defaults(args: argparse.Namespace) -> None:
    """Fill the reference (or tiny) defaults and check the arguments that must agree."""
    tiny = args.tiny
    reference = {"num_prompts": 1000, "steps": REFERENCE_STEPS, "size": REFERENCE_SIZE,
                 "max_new_tokens": GenerationSettings().max_new_tokens, "judge_max_new_tokens": 512}
    for name, value in (TINY if tiny else reference).items():
        if getattr(args, name) is None:  # only an option left out; a given value is checked by its argparse type
            setattr(args, name, value)
    args.min_new_tokens = args.max_new_tokens if args.min_new_tokens is None else args.min_new_tokens
    args.judge = args.judge or ("qwen" if tiny else "llava")
    if not 0 <= args.shard < args.num_shards:
        raise ValueError(f"--shard {args.shard} is outside 0..{args.num_shards - 1} (--num-shards {args.num_shards}).")
    given = [f"--{name.replace('_', '-')}" for name in ("vlm", "aligner", "flux", "judge_model", "clip_model")
             if getattr(args, name) is not None]
    if tiny and given:
        raise ValueError(f"--tiny builds its own models; drop {', '.join(given)} or drop --tiny.")
    args.vlm, args.aligner, args.flux = args.vlm or QWEN2_VL_ID, args.aligner or OFFICIAL_LVLM_ALIGNER, args.flux or FLUX_DEV_ID
    if args.cobsat_dir is None and not args.tiny:
        raise ValueError("--cobsat-dir is required (a CoBSAT checkout with datasets/), or use --tiny.")
    if tiny and args.cobsat_dir is None:
        args.cobsat_dir = args.out / "synthetic_cobsat"


def judge_name(args: argparse.Namespace) -> str:
    """Judgements and reports are filed under the judge's name, so two judges never mix."""
    default = QWEN_JUDGE_ID if args.judge == "qwen" else LLAVA_JUDGE_ID
    return f"{args.judge}-{'tiny' if args.tiny else Path(args.judge_model or default).name}"


def load_judge(args: argparse.Namespace, tiny_vlm: Path | None) -> Judge:
    name = judge_name(args)
    if args.judge == "qwen":
        source = tiny_vlm if tiny_vlm is not None else (args.judge_model or QWEN_JUDGE_ID)
        dtype = "fp32" if tiny_vlm else (args.judge_dtype or args.dtype)
        vlm = VisionLanguageModel.from_pretrained(source, dtype=dtype, device=args.device)
        return QwenJudge(vlm, name, args.judge_max_new_tokens)
    if tiny_vlm is not None:
        raise ValueError("--tiny judges with the tiny Qwen VLM; use --judge qwen (the default with --tiny).")
    return LlavaJudge.from_pretrained(args.judge_model or LLAVA_JUDGE_ID, name, args.judge_dtype or "fp16",
                                      args.device, args.judge_max_new_tokens, args.judge_batch_size)


def text_methods(args: argparse.Namespace) -> bool:
    """Whether a method needs FLUX's T5 (the paper's alone never loads it)."""
    return any(method != "thinkdiff" for method in args.methods)


def load_pipeline(args: argparse.Namespace, tiny_paths: dict[str, Path] | None) -> ThinkDiffPipeline:
    if tiny_paths:
        return ThinkDiffPipeline.from_pretrained(tiny_paths["flux"], tiny_paths["aligner"], tiny_paths["vlm"],
                                                 dtype="fp32", device="cpu", load_t5=text_methods(args))
    return ThinkDiffPipeline.from_pretrained(args.flux, args.aligner, args.vlm, dtype=args.dtype, device=args.device,
                                             offload=args.offload, load_t5=text_methods(args))


def clip_model(args: argparse.Namespace, workdir: Path) -> str | Path:
    if args.tiny:
        from thinkdiff_core.testing.tiny import write_tiny_clip

        return write_tiny_clip(workdir / "clip-tiny")
    return args.clip_model or CLIP_SCORE_ID


def free_memory() -> None:
    """Let one stage's models go before the next stage loads its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(args: argparse.Namespace, workdir: Path) -> dict:
    check_writable_folder(args.out, "--out")  # before any model loads: hours of images must have somewhere to go
    resolve_defaults(args)
    if args.tiny and not (args.cobsat_dir / "datasets").is_dir():
        write_synthetic_dataset(args.cobsat_dir, num_prompts=max(args.num_prompts, 10))
    cases = build_cases(args.cobsat_dir, args.tasks, args.shots, args.num_prompts)
    batches = [b for b in make_batches(cases, args.batch_size) if b.number % args.num_shards == args.shard]
    mine = [case for batch in batches for case in batch.cases]
    summary: dict = {"prompts": len(cases), "shard_prompts": len(mine), "generated": 0, "judged": 0}
    tiny_paths: dict[str, Path] = {}

    def tiny_models() -> dict[str, Path] | None:
        """Written on first use only: a run with nothing left to do loads no model at all."""
        if args.tiny and not tiny_paths:
            from thinkdiff_core.testing.tiny_pipeline import write_tiny_thinkdiff

            tiny_paths.update(write_tiny_thinkdiff(workdir))
        return tiny_paths or None

    if "generate" in args.stages:
        for method in args.methods:
            check_recorded(method_root(args.out, method) / "run.json", generation_config(args, method), "images")
        todo = unfinished(batches, args.out, args.methods)
        if todo:
            summary["generated"] = generate(load_pipeline(args, tiny_models()), todo, args.out, args)
            free_memory()
    if "judge" in args.stages:
        name = judge_name(args)
        todo = {m: unjudged(mine, method_root(args.out, m), name) for m in args.methods}
        if any(todo.values()):
            tiny = tiny_models()
            judge_model = load_judge(args, tiny["vlm"] if tiny else None)
            check_recorded(judge_settings_file(args.out, judge_model.name), judge_model.settings, "judgements")
            summary["judged"] = sum(judge(judge_model, cases_left, method_root(args.out, m), args.judge_batch_size)
                                    for m, cases_left in todo.items() if cases_left)
            free_memory()
    if "clip" in args.stages:
        roots = [method_root(args.out, m) for m in args.methods]
        if any(image_file(r, c).is_file() and not clip_file(r, c).is_file() for r in roots for c in mine):
            scorer = ClipScorer.from_pretrained(str(clip_model(args, workdir)), device=args.device)
            summary["clip_scored"] = sum(clip_score(scorer, mine, root) for root in roots)
            free_memory()
    if "report" in args.stages:
        if args.num_shards > 1:
            print("report skipped: run --stages report once all shards have finished (without --shard).")
        else:
            name = judge_name(args)
            results = report(cases, args.out, name, args.methods)
            write_json(args.out / f"report_{name}.json", results)
            write_text(args.out / f"report_{name}.md", markdown(results))
            summary["report"] = str(args.out / f"report_{name}.md")
            summary["averages"] = {m: {shot: round(r["average"], 4) for shot, r in table["shots"].items()}
                                   for m, table in results["methods"].items()}
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tiny:
        torch.set_num_threads(1)  # tiny models only lose time to thread hand-offs

    def work() -> None:
        with tempfile.TemporaryDirectory(prefix="cobsat-tiny-") as workdir:
            summary = run(args, Path(workdir))
        for key, value in summary.items():
            print(f"{key}: {value}")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
