"""Loading the vision tower: only the vision tensors, only from the shards that hold them; clear errors otherwise."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import thinkdiff_core.vision_files as vision_files
from thinkdiff_core.testing.tiny import write_tiny_t5
from thinkdiff_core.vision import VisionEncoder
from thinkdiff_core.vision_files import read_vision_weights


class RecordingSafeOpen:
    """The real `safe_open`, recording which files are opened and which tensors are read from each."""

    def __init__(self):
        self.opened: list[str] = []
        self.read: list[str] = []

    def __call__(self, filename, *args, **kwargs):
        self.opened.append(filename)
        recorder, handle = self, safe_open(filename, *args, **kwargs)

        class Handle:
            def __enter__(self):
                handle.__enter__()
                return self

            def __exit__(self, *exc):
                return handle.__exit__(*exc)

            def get_tensor(self, name):
                recorder.read.append(name)
                return handle.get_tensor(name)

            def __getattr__(self, name):
                if name in ("get_slice",):
                    raise AssertionError("the loader must read tensors with get_tensor only")
                return getattr(handle, name)

        return Handle()


def index_of(folder):
    return json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]


def test_reads_only_vision_tensors_from_their_shards(blip2_dir, monkeypatch):
    weight_map = index_of(blip2_dir)
    vision_names = sorted(k for k in weight_map if k.startswith("vision_model."))
    vision_shards = {weight_map[k] for k in vision_names}
    all_shards = set(weight_map.values())
    language_bytes = vision_bytes = 0
    for shard in all_shards:
        with safe_open(str(blip2_dir / shard), framework="pt") as handle:
            for name in handle.keys():
                size = handle.get_slice(name).get_shape()
                count = torch.Size(size).numel() * 4
                language_bytes += count if name.startswith("language_model.") else 0
                vision_bytes += count if name.startswith("vision_model.") else 0
    # The folder is a fair trap: vision shares a shard with the language model, which is much larger.
    assert len(vision_shards) == 2 and len(all_shards) == 4 and language_bytes > 5 * vision_bytes
    assert any(weight_map[k] in vision_shards for k in weight_map if k.startswith("language_model."))

    recorder = RecordingSafeOpen()
    monkeypatch.setattr(vision_files, "safe_open", recorder)
    weights = read_vision_weights(blip2_dir)
    assert {p.split("/")[-1] for p in recorder.opened} == vision_shards
    assert sorted(recorder.read) == vision_names
    assert sorted("vision_model." + k for k in weights.tensors) == vision_names
    assert weights.nbytes == vision_bytes
    assert {p.name for p in weights.files_read} == vision_shards


def test_language_only_shards_are_never_needed(blip2_dir, tmp_path, vision_encoder, noise_images):
    folder = tmp_path / "blip2-vision-shards-only"
    shutil.copytree(blip2_dir, folder)
    weight_map = index_of(folder)
    vision_shards = {v for k, v in weight_map.items() if k.startswith("vision_model.")}
    for shard in set(weight_map.values()) - vision_shards:
        (folder / shard).unlink()
    images = noise_images(2)
    loaded = VisionEncoder.from_pretrained(folder, dtype="fp32")
    assert torch.equal(loaded.encode(images).features, vision_encoder.encode(images).features)


def test_single_file_folder(blip2_dir, tmp_path, vision_encoder, noise_images):
    folder = tmp_path / "single"
    folder.mkdir()
    shutil.copy(blip2_dir / "config.json", folder)
    tensors = {}
    for shard in set(index_of(blip2_dir).values()):
        with safe_open(str(blip2_dir / shard), framework="pt") as handle:
            tensors.update({k: handle.get_tensor(k) for k in handle.keys()})
    save_file(tensors, str(folder / "model.safetensors"))
    image = noise_images(1)
    assert torch.equal(VisionEncoder.from_pretrained(folder, dtype="fp32").encode(image).features,
                       vision_encoder.encode(image).features)


def test_dtype_is_applied(blip2_dir, noise_images):
    encoder = VisionEncoder.from_pretrained(blip2_dir, dtype="bf16")
    assert encoder.dtype == torch.bfloat16 and encoder.device.type == "cpu"
    assert encoder.encode(noise_images(1)).features.dtype == torch.bfloat16


def test_folder_without_vision_tensors(blip2_dir, tmp_path):
    folder = tmp_path / "no-vision"
    folder.mkdir()
    shutil.copy(blip2_dir / "config.json", folder)
    save_file({"language_model.shared.weight": torch.zeros(4, 4)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"no vision tower tensors \(vision_model\.\*\).*convert vision"):
        read_vision_weights(folder)


def test_folder_that_is_not_blip2(tmp_path):
    with pytest.raises(ValueError, match="'t5' model, not BLIP-2"):
        read_vision_weights(write_tiny_t5(tmp_path / "flan-t5"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        read_vision_weights(tmp_path / "empty")


def test_incomplete_download(blip2_dir, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(blip2_dir, folder)
    vision_shard = index_of(folder)["vision_model.post_layernorm.weight"]
    (folder / vision_shard).unlink()
    with pytest.raises(FileNotFoundError, match=f"{vision_shard}.*incomplete"):
        read_vision_weights(folder)


def test_bin_only_folder(blip2_dir, tmp_path):
    folder = tmp_path / "bin-only"
    folder.mkdir()
    shutil.copy(blip2_dir / "config.json", folder)
    torch.save({"vision_model.post_layernorm.weight": torch.ones(2)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"only PyTorch \.bin.*\.safetensors"):
        read_vision_weights(folder)


def test_config_that_does_not_fit_the_tensors(blip2_dir, tmp_path):
    folder = tmp_path / "wrong-config"
    shutil.copytree(blip2_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not fit its config.*missing encoder\.layers\.2"):
        VisionEncoder.from_pretrained(folder)


def test_wrong_files(tmp_path):
    other = tmp_path / "aligner.safetensors"
    save_file({"mm_projector.0.weight": torch.zeros(2, 2)}, str(other), metadata={"format": "thinkdiff-aligner"})
    with pytest.raises(ValueError, match=r"not a ThinkDiff vision file.*convert vision"):
        read_vision_weights(other)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="truncated or damaged"):
        read_vision_weights(damaged)
    pth = tmp_path / "vision.pth"
    pth.write_bytes(b"x")
    with pytest.raises(ValueError, match="not .pth"):
        read_vision_weights(pth)
    with pytest.raises(FileNotFoundError, match="models/clip_vision"):
        read_vision_weights(tmp_path / "missing")


def test_conversion_reopens_the_file_per_chunk(blip2_dir, monkeypatch):
    """A cast load reads in chunks (so the fp32 source is never all resident beside the copy): same tensors."""
    stored = read_vision_weights(blip2_dir)
    recorder = RecordingSafeOpen()
    monkeypatch.setattr(vision_files, "safe_open", recorder)
    monkeypatch.setattr(vision_files, "CONVERT_CHUNK_BYTES", 1)
    cast = read_vision_weights(blip2_dir, dtype=torch.bfloat16)
    assert len(recorder.opened) == len(stored.tensors)  # one open per tensor at a 1-byte chunk
    assert sorted(recorder.read) == sorted("vision_model." + k for k in stored.tensors)
    assert all(torch.equal(cast.tensors[k], v.to(torch.bfloat16)) for k, v in stored.tensors.items())
