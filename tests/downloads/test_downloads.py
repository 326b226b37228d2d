"""Explicit downloads: the loaders' download entries, fetched from the stand-in Hub with progress, then loaded for real."""

import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from packaging.version import Version

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.downloads import ALIGNERS, VISION_MODELS, VLMS, download, offered, picked, reports_within_files
from thinkdiff_core.vision import VisionEncoder
from thinkdiff_core.vlm import VisionLanguageModel

QWEN, LVLM_ALIGNER, CLIP_ALIGNER, BLIP2 = VLMS[0], ALIGNERS[0], ALIGNERS[1], VISION_MODELS[0]
TRANSFORMERS_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt")
RESUMES_WITHIN_A_PICK = Version(huggingface_hub.__version__) >= Version("1.0")
"""huggingface_hub 0.x retries a connection that breaks off mid-file only on a timeout or a refused connection."""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_files(folder: Path, source: Path, names: list[str]) -> bool:
    return all(digest(folder / name) == digest(source / name) for name in names)


class Reports(list):
    """Every (done, total) a download reported."""

    def __call__(self, done: int, total: int) -> None:
        self.append((done, total))

    def check_complete(self, total_bytes: int) -> None:
        dones = [done for done, _ in self]
        assert dones == sorted(dones) and all(done <= total for done, total in self), self[-5:]
        assert self[-1] == (total_bytes, total_bytes)


def test_the_listing_offers_the_known_models_not_on_disk_and_asks_the_hub_nothing(served, model_folders, tmp_path):
    vlm, thinkdiff, clip_vision = tmp_path / "vlm", tmp_path / "thinkdiff", tmp_path / "clip_vision"
    (vlm / "tiny-Qwen2.5-VL").mkdir(parents=True)
    (vlm / "tiny-Qwen2.5-VL" / "config.json").write_text("{}")
    local_vlms = model_folders.find_model_folders([vlm])
    assert offered(VLMS, local_vlms) == [
        "tiny-Qwen2.5-VL", "Qwen2-VL-7B-Instruct (download from Qwen/Qwen2-VL-7B-Instruct)"]
    assert offered(VLMS, ["Qwen/Qwen2-VL-7B-Instruct"]) == ["Qwen/Qwen2-VL-7B-Instruct"]  # nested: still the same model
    assert offered(ALIGNERS, ["thinkdiff_clip.pth"]) == [
        "thinkdiff_clip.pth", "thinkdiff_lvlm.pth (download from Mifucius/ThinkDiff)"]
    assert offered(VISION_MODELS, model_folders.find_vision_models([thinkdiff, clip_vision])) == [
        "blip2-flan-t5-xxl (download from Salesforce/blip2-flan-t5-xxl)"]
    assert picked(VLMS, "Qwen2-VL-7B-Instruct (download from Qwen/Qwen2-VL-7B-Instruct)") is QWEN
    assert picked(VLMS, "Qwen2-VL-7B-Instruct") is None  # a local name is never a download
    assert served.requests == []  # nothing is asked of the Hub until an entry is picked


def test_a_picked_vlm_is_downloaded_with_progress_into_models_vlm_and_loads(served, model_folders, load_tiny_vlm, tmp_path):
    source = served.repos[QWEN.repo_id]
    reports = Reports()
    folder = download(QWEN, tmp_path / "vlm", reports)

    assert folder == tmp_path / "vlm" / "Qwen2-VL-7B-Instruct"
    wanted = sorted(p.name for p in source.iterdir() if p.suffix in TRANSFORMERS_SUFFIXES)
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == wanted  # not README.md, not pytorch_model.bin
    assert same_files(folder, source, wanted)
    fetched = [name for method, name, _ in served.requests if method == "GET" and not name.startswith("/api/")]
    assert sorted(fetched) == wanted and fetched[-1] == "config.json"  # last: the folder lists once it is complete
    reports.check_complete(sum((source / name).stat().st_size for name in wanted))

    # an ordinary local entry now: listed without the download mark, resolved, loaded by the real loader
    local = model_folders.find_model_folders([tmp_path / "vlm"])
    assert offered(VLMS, local) == ["Qwen2-VL-7B-Instruct"]
    vlm = VisionLanguageModel.from_pretrained(model_folders.resolve_vlm_folder([tmp_path / "vlm"], local[0]),
                                              dtype="fp32", device="cpu")
    original = load_tiny_vlm("qwen2_vl").model.state_dict()
    assert all(torch.equal(tensor, original[name]) for name, tensor in vlm.model.state_dict().items())

    requests = len(served.requests)
    assert download(QWEN, tmp_path / "vlm") == folder and len(served.requests) == requests  # on disk: no Hub asked


def test_the_picked_aligners_go_to_models_thinkdiff_and_load(served, model_folders, tmp_path):
    reports = Reports()
    path = download(LVLM_ALIGNER, tmp_path / "thinkdiff", reports)
    assert path == tmp_path / "thinkdiff" / "thinkdiff_lvlm.pth"
    assert same_files(path.parent, served.repos[LVLM_ALIGNER.repo_id], [path.name])
    reports.check_complete(path.stat().st_size)
    download(CLIP_ALIGNER, tmp_path / "thinkdiff")
    names = model_folders.find_aligner_files([tmp_path / "thinkdiff"])  # huggingface_hub's .cache/ is not listed
    assert names == ["thinkdiff_clip.pth", "thinkdiff_lvlm.pth"] and offered(ALIGNERS, names) == names
    assert load_aligner(path).info.variant == "lvlm"
    assert load_aligner(model_folders.resolve_vision_model([tmp_path / "thinkdiff"], names[0])).info.variant == "clip"


def test_blip2_gives_only_its_vision_files_into_models_clip_vision(served, model_folders, vision_encoder, colour_images,
                                                                   tmp_path):
    source = served.repos[BLIP2.repo_id]
    reports = Reports()
    folder = download(BLIP2, tmp_path / "clip_vision", reports)

    fetched = [name for method, name, _ in served.requests if method == "GET" and not name.startswith("/api/")]
    weight_map = json.loads((source / "model.safetensors.index.json").read_text())["weight_map"]
    all_shards = set(weight_map.values())
    vision_shards = sorted({shard for name, shard in weight_map.items() if name.startswith("vision_model.")})
    assert 0 < len(vision_shards) < len(all_shards)  # the tiny folder's layout: the test means something
    assert fetched == ["model.safetensors.index.json", "preprocessor_config.json", *vision_shards, "config.json"]
    assert same_files(folder, source, fetched)
    reports.check_complete(sum((source / name).stat().st_size for name in fetched))

    assert model_folders.find_vision_models([tmp_path / "clip_vision"]) == ["blip2-flan-t5-xxl"]
    encoder = VisionEncoder.from_pretrained(folder, dtype="fp32", device="cpu")
    images = colour_images("red", "navy")
    assert torch.equal(encoder.encode(images).features, vision_encoder.encode(images).features)


def test_a_dropped_connection_resumes_where_it_broke_off(served, tmp_path):
    source = served.repos[LVLM_ALIGNER.repo_id] / "thinkdiff_lvlm.pth"  # 4096 x 4096 fp32 inside: about 68 MB
    cut = 25 * 2**20
    served.cut["thinkdiff_lvlm.pth"] = cut
    if RESUMES_WITHIN_A_PICK:
        path = download(LVLM_ALIGNER, tmp_path / "thinkdiff")
    else:  # the pick ends with the error, which says how to go on; the next pick resumes
        with pytest.raises(FileNotFoundError, match="thinkdiff_lvlm.pth .*Pick the entry again"):
            download(LVLM_ALIGNER, tmp_path / "thinkdiff")
        path = download(LVLM_ALIGNER, tmp_path / "thinkdiff")
    first, resumed = served.gets("thinkdiff_lvlm.pth")
    assert first is None and resumed.startswith("bytes=") and resumed.endswith("-")
    assert 0 < int(resumed[len("bytes="):-1]) <= cut  # the rest only (from its last whole chunk), not the whole file
    assert digest(path) == digest(source)


class Cancelled(Exception):
    """What a UI's cancel raises from its progress callback (ComfyUI: InterruptProcessingException)."""


def test_a_cancelled_download_is_not_listed_and_a_new_pick_fetches_only_what_is_missing(served, model_folders, tmp_path):
    source = served.repos[QWEN.repo_id]
    before_weights = sum((source / name).stat().st_size for name in ("chat_template.jinja", "generation_config.json"))

    def cancel_inside_the_weights(done: int, total: int) -> None:
        if done > before_weights + 1000:
            raise Cancelled

    with pytest.raises(Cancelled):  # the UI's own exception, not turned into a download error
        download(QWEN, tmp_path / "vlm", cancel_inside_the_weights)
    assert model_folders.find_model_folders([tmp_path / "vlm"]) == []  # incomplete: no config.json yet
    assert offered(VLMS, []) == [QWEN.label]

    folder = download(QWEN, tmp_path / "vlm")
    assert served.gets("chat_template.jinja") == served.gets("generation_config.json") == [None]  # kept, not fetched again
    # huggingface_hub 0.x reports (and so cancels) only once a file is complete: then its weights are kept too
    assert len(served.gets("model.safetensors")) == (2 if reports_within_files() else 1)
    assert same_files(folder, source, [p.name for p in folder.iterdir() if p.is_file()])
    assert model_folders.find_model_folders([tmp_path / "vlm"]) == ["Qwen2-VL-7B-Instruct"]


def test_a_folder_someone_else_made_is_never_written_into(served, tmp_path):
    mine = tmp_path / "vlm" / "Qwen2-VL-7B-Instruct"
    mine.mkdir(parents=True)
    (mine / "model.safetensors").write_bytes(b"my own weights")
    with pytest.raises(FileExistsError, match="no download here made it"):
        download(QWEN, tmp_path / "vlm")
    assert (mine / "model.safetensors").read_bytes() == b"my own weights" and served.requests == []


def test_offline_the_error_names_the_file_its_url_and_the_folder(offline, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        download(LVLM_ALIGNER, tmp_path / "thinkdiff")
    message = str(error.value)
    assert f"{offline.url}/Mifucius/ThinkDiff/resolve/main/thinkdiff_lvlm.pth" in message
    assert f"put it in {tmp_path / 'thinkdiff'}/" in message and "OfflineModeIsEnabled" in message
    with pytest.raises(FileNotFoundError) as error:
        download(QWEN, tmp_path / "vlm")
    assert f"{offline.url}/Qwen/Qwen2-VL-7B-Instruct/tree/main" in str(error.value)
    assert f"put it in {tmp_path / 'vlm' / 'Qwen2-VL-7B-Instruct'}/" in str(error.value)
    assert offline.requests == []


def test_a_file_missing_on_the_hub_is_named_with_its_url(served, tmp_path):
    repo = Path(shutil.copytree(served.repos[BLIP2.repo_id], tmp_path / "repo"))
    (repo / "preprocessor_config.json").unlink()
    served.repos[BLIP2.repo_id] = repo
    with pytest.raises(FileNotFoundError) as error:
        download(BLIP2, tmp_path / "clip_vision")
    message = str(error.value)
    assert "Could not download preprocessor_config.json" in message and "EntryNotFoundError" in message  # 0.x: no Remote
    assert f"{served.url}/Salesforce/blip2-flan-t5-xxl/resolve/main/preprocessor_config.json" in message
    assert not (tmp_path / "clip_vision" / "blip2-flan-t5-xxl" / "config.json").exists()
