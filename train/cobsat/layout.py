"""Where every file of a CoBSAT run lives, and how it is written: one place for the generate, judge, clip and
report stages, so a resumed or sharded run finds exactly what an earlier one wrote."""

from __future__ import annotations

import json
from pathlib import Path

from thinkdiff_core.files import write_atomic

from .tasks import Case


def case_dir(root: Path, case: Case) -> Path:
    return root / f"shot_{case.shot}" / f"task_{case.task.id}"


def method_root(out: Path, method: str) -> Path:
    """Where a method's images, judgements and settings live (the paper's method directly in OUT)."""
    return out if method == "thinkdiff" else out / "methods" / method


def image_file(out: Path, case: Case) -> Path:
    return case_dir(out / "images", case) / f"{case.name}.jpg"


def clip_file(out: Path, case: Case) -> Path:
    return case_dir(out / "clip_scores", case) / f"{case.name}.json"


def judge_settings_file(out: Path, judge_name: str) -> Path:
    return out / f"judge_{judge_name}.json"


def judgement_file(out: Path, judge_name: str, case: Case) -> Path:
    return case_dir(out / "judgements" / judge_name, case) / f"{case.name}.json"


def unjudged(cases: list[Case], out: Path, judge_name: str) -> list[Case]:
    """The cases with an image but no judgement yet (what a resumed judge stage, or the report, still lacks)."""
    return [c for c in cases if image_file(out, c).is_file() and not judgement_file(out, judge_name, c).is_file()]


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=1, sort_keys=True))


def write_text(path: Path, text: str) -> None:
    """Atomic: a resumed run or a reader never sees half a file."""
    write_atomic(path, lambda temporary: temporary.write_text(text), overwrite=True)
