"""Training fixtures: a tiny T5, synthetic shape images and precomputed features, built once per session.

The CLIP variant's tiny BLIP-2 folder and its encoder (`blip2_dir`, `vision_encoder`) come from tests/conftest.py.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from thinkdiff_core.testing.tiny import CORPUS, write_tiny_t5
from train import config as cfg
from train.config import TrainConfig
from train.decoder import load_decoder
from train.precompute import BRIEF_INSTRUCTIONS, PrecomputeConfig
from train.precompute import run as precompute
from thinkdiff_core.testing.synthetic import all_captions, shape_samples, write_image_folder, write_webdataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
    return write_tiny_t5(tmp_path_factory.mktemp("t5") / "tiny-t5", corpus=all_captions() + CORPUS + BRIEF_INSTRUCTIONS)


@pytest.fixture(scope="session")
def shape_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return {"train": write_image_folder(root / "train", shape_samples(48, seed=1)),
            "held_out": write_image_folder(root / "held_out", shape_samples(16, seed=2))}


def precompute_config(vlm_dir, images, output, **overrides) -> PrecomputeConfig:
    """Small generations from the random tiny VLM; at least 6 tokens so every sample can be split."""
    values = dict(vlm=str(vlm_dir), images=str(images), output=str(output), batch_size=8, folder_chunk=16,
                  max_new_tokens=12, min_new_tokens=6, rank=0, world_size=1)
    return PrecomputeConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def features(tiny_vlm_dirs, shape_folders, tmp_path_factory):
    """Feature shards of the random tiny Qwen2-VL: 3 training shards of 16, 1 held-out shard of 16."""
    root = tmp_path_factory.mktemp("features")
    out = {}
    for split, images in shape_folders.items():
        out[split] = root / split
        precompute(precompute_config(tiny_vlm_dirs("qwen2_vl"), images, out[split]))
    return out


@pytest.fixture(scope="session")
def shape_shards(shape_folders, tmp_path_factory):
    """The training shapes again as CC-SBU-layout tar shards (3 of 16: .jpg + .txt + .json)."""
    folder = tmp_path_factory.mktemp("shape_shards")
    write_webdataset(folder, shape_samples(48, seed=1), per_shard=16)
    return folder


@pytest.fixture(scope="session")
def clip_proxy(tiny_t5_dir, blip2_dir):
    """The CLIP variant's frozen parts: the tiny T5 with its encoder kept, and the tiny BLIP-2 vision tower."""
    return load_decoder(str(tiny_t5_dir), keep_encoder=True, dtype="fp32", vision_encoder=str(blip2_dir))


def train_config(features, t5_dir, output_dir, **sections) -> TrainConfig:
    """A fast CPU configuration; `sections` override whole option groups by key."""
    values = {
        "model": {"decoder": str(t5_dir), "decoder_dtype": "fp32"},
        "data": {"train": str(features["train"]), "eval": str(features["held_out"]), "batch_size": 8,
                 "num_workers": 0, "shuffle_buffer": 16, "max_target_tokens": 32, "eval_samples": 16},
        "optim": {"lr": 1e-3, "warmup_steps": 3, "max_steps": 6, "max_grad_norm": 1.0},
        "run": {"output_dir": str(output_dir), "log_every": 2, "eval_every": 0, "save_every": 0, "keep_last": 2,
                "mixed_precision": "no"},
    }
    for name, update in sections.items():
        values[name] = {**values.get(name, {}), **update}
    return cfg.from_dict(TrainConfig, values)


def write_config(config: TrainConfig, path: Path) -> Path:
    path.write_text(cfg.dump_yaml(config))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tool_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO)}


def run_tool(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=tool_env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture
def make_precompute_config():
    return precompute_config


@pytest.fixture
def make_train_config(features, tiny_t5_dir, tmp_path):
    def make(output_dir=None, **sections) -> TrainConfig:
        return train_config(features, tiny_t5_dir, output_dir or tmp_path / "run", **sections)

    return make


@pytest.fixture
def make_clip_config(shape_shards, shape_folders, tiny_t5_dir, blip2_dir, tmp_path):
    """A fast CPU CLIP configuration: training from tar shards, held-out from a folder with captions.jsonl."""

    def make(output_dir=None, **sections) -> TrainConfig:
        data = {"train": str(shape_shards), "eval": str(shape_folders["held_out"]), "max_target_tokens": 32}
        base = train_config({"train": "", "held_out": ""}, tiny_t5_dir, output_dir or tmp_path / "clip-run",
                            model={"variant": "clip", "vision_encoder": str(blip2_dir)}, data=data)
        return cfg.merge(base, sections)

    return make


@pytest.fixture
def tools():
    """Run `python ARGS` from the repo root with one thread per process, offline."""

    class Tools:
        env = staticmethod(tool_env)
        run = staticmethod(run_tool)
        write_config = staticmethod(write_config)
        free_port = staticmethod(free_port)
        repo = REPO

    return Tools
