"""Kill-and-resume: a run killed mid-way (SIGKILL) and resumed ends with the same aligner as an unbroken run."""

import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from train import checkpoints
from train.align import train


def test_killed_and_resumed_run_equals_straight_run(make_train_config, tools, tmp_path):
    settings = dict(optim={"max_steps": 300, "warmup_steps": 20}, data={"num_workers": 2, "eval": ""},
                    run={"save_every": 5, "keep_last": 2, "log_every": 100})
    straight = make_train_config(tmp_path / "straight", **settings)
    broken = make_train_config(tmp_path / "broken", **settings)
    config_file = tools.write_config(broken, tmp_path / "broken.yaml")

    process = subprocess.Popen([sys.executable, "-m", "train.align", "--config", str(config_file)], cwd=tools.repo,
                               env=tools.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = checkpoints.latest(tmp_path / "broken")
        if found is not None and int(found.name.split("-")[1]) >= 20:
            break
        time.sleep(0.01)
    process.kill()
    _, errors = process.communicate()
    killed_at = checkpoints.latest(tmp_path / "broken")
    assert killed_at is not None, errors[-2000:]
    assert not (tmp_path / "broken" / "aligner.safetensors").exists(), "the run finished before it could be killed"
    assert int(killed_at.name.split("-")[1]) < 300

    resumed = tools.run("-m", "train.align", "--config", str(config_file), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {killed_at} (step {int(killed_at.name.split('-')[1])})" in resumed.stdout

    summary = train(straight)
    assert summary["steps"] == 300
    expected = load_file(tmp_path / "straight" / "aligner.safetensors")
    actual = load_file(tmp_path / "broken" / "aligner.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert (expected[key] - actual[key]).abs().max().item() <= 1e-6, key
    assert len(checkpoints.checkpoints(tmp_path / "broken")) == 2  # keep_last


def test_resume_refuses_a_changed_data_order(make_train_config, tmp_path):
    train(make_train_config(tmp_path / "run", optim={"max_steps": 2}, data={"eval": ""}))
    with pytest.raises(ValueError, match="data.batch_size"):
        train(make_train_config(tmp_path / "run", optim={"max_steps": 4}, data={"eval": "", "batch_size": 4},
                                run={"resume": True}))
    with pytest.raises(FileExistsError, match="--resume"):
        train(make_train_config(tmp_path / "run", optim={"max_steps": 4}, data={"eval": ""}))
