"""Progress a user waits on: transformers' own loading loops, and the VLM's answer token by token.

transformers >= 5 lets a caller wrap every progress bar it creates (`transformers.utils.logging.set_tqdm_hook`);
inside `reporting_progress(report)` each bar still draws in the console as usual and also calls
`report(done, total)` as it advances. Older transformers have no such hook: there the console bar is all.
A 7B VLM writes its 128-token answer at a few tokens a second on a small card, so the command-line tools
draw it as a console bar too (`token_bar`); the ComfyUI nodes feed the same `on_token` calls to the node's bar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

Report = Callable[[int, int], None]


def cancellable(check_cancel: Callable[[], None], report: Report) -> Report:
    """A `report(done, total)` (per token, per downloaded byte) that first lets the user stop the work:
    `check_cancel` raises (ComfyUI's interrupt exception) to stop it between two steps."""
    def step(done: int, total: int) -> None:
        check_cancel()
        report(done, total)

    return step


class _ReportingBar:
    """A tqdm bar (or transformers' silent stand-in) that also reports each step."""

    def __init__(self, bar: Any, total: int | None, report: Report) -> None:
        self._bar, self._total, self._report = bar, total, report
        self._done = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)

    def __iter__(self) -> Iterator[Any]:
        for item in self._bar:
            yield item
            self._step(1)

    def update(self, n: int = 1) -> Any:
        shown = self._bar.update(n)
        self._step(n)
        return shown

    def _step(self, n: int) -> None:
        self._done += n
        self._report(self._done, self._total or self._done)

    def __enter__(self) -> "_ReportingBar":
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._bar.__exit__(*exc_info)


@contextlib.contextmanager
def reporting_progress(report: Report | None) -> Iterator[None]:
    """While inside, transformers' progress bars also call `report(done, total)` (a no-op without the hook)."""
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if report is None or set_hook is None:
        yield
        return

    def hook(factory: Callable[..., Any], args: tuple, kwargs: dict) -> _ReportingBar:
        total = kwargs.get("total")
        if total is None and args and hasattr(args[0], "__len__"):
            total = len(args[0])
        return _ReportingBar(factory(*args, **kwargs), total, report)

    previous = set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)


@contextlib.contextmanager
def token_bar(desc: str = "VLM answer") -> Iterator[Report]:
    """An `on_token(done, total)` that draws the VLM's new tokens as a console bar. The bar opens at the first
    token, so a run without a VLM (ThinkDiff-CLIP) draws none, and is cleared when the answer is done (a tool
    prints the answer itself; a benchmark answers batch after batch)."""
    bar: tqdm | None = None

    def on_token(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="token", leave=False, dynamic_ncols=True)
        bar.update(done - bar.n)

    try:
        yield on_token
    finally:
        if bar is not None:
            bar.close()
