"""The CoBSAT report: accuracy per task and shot count for each method, beside the paper's numbers (JSON and
Markdown), and the CLIP-similarity summary."""

from __future__ import annotations

import json
from pathlib import Path

from .clip_score import MISSING_SCORE
from .judge import Judgement
from .layout import clip_file, image_file, judge_settings_file, judgement_file, method_root, unjudged
from .tasks import TASKS, Case

PAPER = {
    "source": "ThinkDiff-LVLM, ICML 2025 (judge: LLaVA-1.5-13B)",
    "ablations": {"2": {"input-token features": 0.016, "no masking": 0.287}},
    "2": {"average": 0.417},
    "4": {"average": 0.463, "Color-I": 0.638, "Background-I": 0.362, "Style-I": 0.254, "Action-I": 0.434,
          "Texture-I": 0.317, "Color-II": 0.610, "Background-II": 0.590, "Style-II": 0.432, "Action-II": 0.664,
          "Texture-II": 0.332},
}


def report(cases: list[Case], out: Path, judge_name: str, methods: list[str] = ["thinkdiff"]) -> dict:
    """Accuracy per method, shot count and task; missing images are wrong, unjudged existing images are an error."""
    settings = judge_settings_file(out, judge_name)
    return {"judge": json.loads(settings.read_text()) if settings.is_file() else {"judge": judge_name},
            "paper": PAPER, "methods": {m: method_report(cases, method_root(out, m), judge_name) for m in methods}}


def method_report(cases: list[Case], out: Path, judge_name: str) -> dict:
    missing_judgements = unjudged(cases, out, judge_name)
    if missing_judgements:
        raise ValueError(
            f"{len(missing_judgements)} images have no {judge_name} judgement (e.g. "
            f"{image_file(out, missing_judgements[0])}). Run "
            f"--stages judge for every shard first."
        )
    results: dict = {"shots": {}}
    for shot in sorted({c.shot for c in cases}):
        tasks = {}
        for task_id in sorted({c.task.id for c in cases if c.shot == shot}):
            group = [c for c in cases if c.shot == shot and c.task.id == task_id]
            verdicts = [Judgement.from_json(json.loads(judgement_file(out, judge_name, c).read_text()))
                        if image_file(out, c).is_file() else None for c in group]
            judged = [v for v in verdicts if v is not None]
            tasks[TASKS[task_id].name] = {
                "accuracy": sum(v.correct for v in judged) / len(group),
                "object_accuracy": sum(v.object_correct for v in judged) / len(group),
                "attribute_accuracy": sum(v.attribute_correct for v in judged) / len(group),
                "prompts": len(group), "missing_images": len(group) - len(judged),
            } | clip_summary(out, group)
        average = sum(t["accuracy"] for t in tasks.values()) / len(tasks)
        results["shots"][str(shot)] = {"tasks": tasks, "average": average} | {
            f"average_{key}": sum(t[key] for t in tasks.values()) / len(tasks)
            for key in ("clip_similarity", "clip_accuracy") if all(key in t for t in tasks.values())}
    return results


def clip_summary(out: Path, group: list[Case]) -> dict:
    """The benchmark's CLIP averages over a task's prompts (missing images score 0), once every image has a score."""
    files = [clip_file(out, c) for c in group]
    if not all(f.is_file() for f, c in zip(files, group) if image_file(out, c).is_file()):
        return {}
    scores = [json.loads(f.read_text()) if image_file(out, c).is_file() else MISSING_SCORE for f, c in zip(files, group)]
    return {"clip_similarity": sum(s["clip_similarity_overall"] for s in scores) / len(group),
            "clip_accuracy": sum(s["clip_correct"] for s in scores) / len(group)}


def judge_line(settings: dict) -> str:
    """"llava-llava-1.5-13b-hf, float16, 1 image per call" from a judge's recorded settings."""
    extras = [settings["dtype"]] if "dtype" in settings else []
    extras += [f"{settings['batch_size']} image{'s' * (settings['batch_size'] != 1)} per call"] \
        if "batch_size" in settings else []
    return ", ".join([settings["judge"], *extras])


def markdown(results: dict) -> str:
    """One table: per shot count, a column for each method, then the paper's; the paper's ablation rows last."""
    methods = results["methods"]
    shots = list(next(iter(methods.values()))["shots"])
    header = "| task | " + " | ".join(" | ".join([*(f"{m} {s}-shot" for m in methods), f"paper {s}-shot"])
                                      for s in shots) + " |"
    rule = "|---|" + ("---|" * (len(methods) + 1)) * len(shots)
    names = [task.name for task in TASKS.values()
             if any(task.name in methods[m]["shots"][s]["tasks"] for m in methods for s in shots)]

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def ours(method: str, shot: str, key: str) -> float | None:
        table = methods[method]["shots"][shot]
        return table["average"] if key == "average" else table["tasks"].get(key, {}).get("accuracy")

    def row(name: str, values) -> str:
        return f"| {name} | " + " | ".join(number(v) for v in values) + " |"

    rows = [row(name, [v for s in shots for v in [*(ours(m, s, name) for m in methods), PAPER.get(s, {}).get(name)]])
            for name in names + ["average"]]
    for key, label in (("average_clip_similarity", "CLIP similarity (average)"), ("average_clip_accuracy",
                                                                                "CLIP accuracy (average)")):
        if any(key in methods[m]["shots"][s] for m in methods for s in shots):
            rows.append(row(label, [v for s in shots for v in [*(methods[m]["shots"][s].get(key) for m in methods),
                                                                None]]))
    ablations = sorted({name for s in shots for name in PAPER["ablations"].get(s, {})})
    rows += [row(f"paper ablation: {name}", [v for s in shots for v in [*(None for _ in methods),
                                                                         PAPER["ablations"].get(s, {}).get(name)]])
             for name in ablations]
    missing = sum(t["missing_images"] for m in methods.values() for s in shots for t in m["shots"][s]["tasks"].values())
    return "\n".join([
        f"# CoBSAT accuracy (judge: {judge_line(results['judge'])})", "",
        f"Paper: {PAPER['source']}. A prompt counts as correct when the judge names both the object and the "
        f"attribute; missing images ({missing} here) count as wrong.", "", header, rule, *rows, "",
    ])


# --- command line ---
