"""The models a loader offers before they are on disk, and their download when a user picks one.

A loader lists what is on disk, then one entry per known model that is not there yet, marked
`<name> (download from <repo>)` (`offered`). Listing never touches the network: only a picked entry
(`download`) does, through huggingface_hub, with its console progress bar and `report(done, total)`
in bytes for a UI: as the bytes arrive with huggingface_hub >= 1.0, file by file with the 0.x that
transformers 4 brings (its `hf_hub_download` takes no progress bar; `reports_within_files`). The files
go to the loader's own models/ folder under the name the entry becomes, an ordinary local entry from
then on; a model folder's config.json comes last, so the loaders list a
folder only once it is complete. huggingface_hub keeps its bookkeeping in a hidden
`.cache/huggingface/` beside the files (the loaders skip hidden folders): picked again after an
interruption, the download skips every file already complete. A connection dropped within a file is
resumed where it broke off: within the same pick by huggingface_hub >= 1.0, on the next pick with 0.x
(which ends this one with the error). Where the Hub cannot be reached (offline, `HF_HUB_OFFLINE`, no
access) the error names the file, its URL and the folder to put it in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

from .hub import TRANSFORMERS_FILES
from .vision_files import BLIP2_HUB_ID, INDEX_FILE, vision_files_after_index

Report = Callable[[int, int], None]
"""`report(bytes done, bytes in all)`; it may raise to stop the download (a UI's cancel)."""

BOOKKEEPING = Path(".cache") / "huggingface"
"""Where huggingface_hub records, inside a download folder, which files it has fetched."""


@dataclass(frozen=True)
class KnownModel:
    """A model a loader can offer for download.

    `name` is the local entry it becomes: a folder under (layouts "transformers" and "vision") or a file in
    (layout "file": the repo file `name`) the models/ folder ComfyUI knows as `folder_key`. "transformers"
    takes the repo's TRANSFORMERS_FILES, "vision" only what BLIP-2's vision tower is read from.
    """

    name: str
    repo_id: str
    folder_key: str
    layout: str

    @property
    def label(self) -> str:
        return f"{self.name} (download from {self.repo_id})"

    def entry(self, root: Path) -> Path:
        return root / self.name

    def is_on_disk(self, root: Path) -> bool:
        entry = self.entry(root)
        return entry.is_file() if self.layout == "file" else (entry / "config.json").is_file()


THINKDIFF_REPO = "Mifucius/ThinkDiff"
VLMS = (KnownModel("Qwen2-VL-7B-Instruct", "Qwen/Qwen2-VL-7B-Instruct", "vlm", "transformers"),)
"""The VLM the official ThinkDiff-LVLM aligner was trained on."""
ALIGNERS = (KnownModel("thinkdiff_lvlm.pth", THINKDIFF_REPO, "thinkdiff", "file"),
            KnownModel("thinkdiff_clip.pth", THINKDIFF_REPO, "thinkdiff", "file"))
VISION_MODELS = (KnownModel("blip2-flan-t5-xxl", BLIP2_HUB_ID, "clip_vision", "vision"),)


def offered(catalog: Iterable[KnownModel], local_names: list[str]) -> list[str]:
    """`local_names`, then the labels of the known models none of them already is (by the name's last part, so a
    folder nested as Qwen/Qwen2-VL-7B-Instruct counts)."""
    present = {PurePosixPath(name).name for name in local_names}
    return [*local_names, *(model.label for model in catalog if model.name not in present)]


def picked(catalog: Iterable[KnownModel], name: str) -> KnownModel | None:
    """The known model whose download entry `name` is, or None for any other name."""
    return next((model for model in catalog if model.label == name), None)


class _Progress:
    """Bytes done over bytes planned, fed by huggingface_hub's progress bars (a tqdm subclass that also reports)."""

    def __init__(self, report: Report | None) -> None:
        self.report, self.done, self.total = report, 0, 0
        self.stopped_by: BaseException | None = None  # what `report` raised, so it is not taken for a Hub error

    def advance(self, n: int) -> None:
        self.done += n
        if self.report is not None:
            try:
                self.report(self.done, max(self.total, self.done))
            except BaseException as error:
                self.stopped_by = error
                raise

    def bar_class(self) -> type:
        from huggingface_hub.utils import tqdm

        progress = self

        class ReportingBar(tqdm):
            def update(self, n: float | None = 1) -> bool | None:
                progress.advance(int(n or 0))
                return super().update(n)

        return ReportingBar


@cache
def reports_within_files() -> bool:
    """Whether huggingface_hub's `hf_hub_download` takes a progress-bar class (>= 1.0), so progress (and a UI's
    cancel) moves within a file and not only between files."""
    import inspect

    from huggingface_hub import hf_hub_download

    return "tqdm_class" in inspect.signature(hf_hub_download).parameters


def download(model: KnownModel, root: str | Path, report: Report | None = None) -> Path:
    """Download `model` into `root` (the models/ folder of its `folder_key`) and return its local entry.

    An entry already on disk is returned as it is, without asking the Hub. A folder of the model's name that
    something else made (no huggingface_hub bookkeeping in it) is refused, never written into.
    """
    root = Path(root)
    entry = model.entry(root)
    if model.is_on_disk(root):
        return entry
    folder = root if model.layout == "file" else entry
    if model.layout != "file" and entry.exists() and not (entry / BOOKKEEPING).is_dir():
        raise FileExistsError(f"{entry} exists but is not a complete model (no config.json) and no download here made "
                              f"it. Complete it with {model.repo_id}'s files, or move it away and pick "
                              f"{model.label!r} again.")
    progress = _Progress(report)
    sizes = _repo_sizes(model, folder)
    if model.layout == "file":
        plan = [model.name]
    elif model.layout == "vision":
        progress.total = sizes.get(INDEX_FILE, 0)
        plan = vision_files_after_index(_fetch(model, INDEX_FILE, folder, progress))
    else:
        from huggingface_hub.utils import filter_repo_objects

        plan = sorted(filter_repo_objects(sizes, allow_patterns=TRANSFORMERS_FILES), key=lambda f: f == "config.json")
    progress.total = progress.done + sum(sizes.get(filename, 0) for filename in plan)
    for filename in plan:
        _fetch(model, filename, folder, progress)
    return entry


def _repo_sizes(model: KnownModel, folder: Path) -> dict[str, int]:
    """{file in the repo: its size}, from the Hub's listing of the repo."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    try:
        return {item.path: item.size for item in HfApi().list_repo_tree(model.repo_id, recursive=True)
                if isinstance(item, RepoFile)}
    except Exception as error:  # offline, unknown repo, no access: huggingface_hub's or its HTTP library's errors
        filename = model.name if model.layout == "file" else None
        raise FileNotFoundError(_failed(model, filename, folder, error)) from error


def _fetch(model: KnownModel, filename: str, folder: Path, progress: _Progress) -> Path:
    """One repo file into `folder`, its bytes counted in `progress` (all of them when it was already there)."""
    from huggingface_hub import hf_hub_download

    before = progress.done
    bar = {"tqdm_class": progress.bar_class()} if reports_within_files() else {}
    try:
        path = Path(hf_hub_download(model.repo_id, filename, local_dir=folder, **bar))
    except Exception as error:
        if error is progress.stopped_by:
            raise
        raise FileNotFoundError(_failed(model, filename, folder, error)) from error
    progress.advance(before + path.stat().st_size - progress.done)
    return path


def _failed(model: KnownModel, filename: str | None, folder: Path, error: Exception) -> str:
    """What went wrong, and both ways on: pick the entry again, or fetch the file by hand."""
    from huggingface_hub import constants, hf_hub_url

    details = str(error).strip().splitlines()[0][:300] if str(error).strip() else "no details"
    if filename is None:
        what, url = f"the files of {model.repo_id}", f"{constants.ENDPOINT}/{model.repo_id}/tree/main"
        if model.layout == "transformers":
            what += f" ({', '.join(TRANSFORMERS_FILES)})"
    else:
        what, url = filename, hf_hub_url(model.repo_id, filename)
    return (f"Could not download {filename or 'the file list'} of {model.label!r} from the Hugging Face Hub "
            f"({type(error).__name__}: {details}). Pick the entry again once the Hub can be reached: the files "
            f"already complete are kept. Or download {what} from {url} and put it in {folder}/, then refresh the "
            f"model lists.")
