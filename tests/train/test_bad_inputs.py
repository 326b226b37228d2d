"""`python -m train.align` with inputs and faults that used to lose work or end in a traceback."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from train import align, checkpoints
from train.align import train
from train.run_lock import LOCK_FILE, RunLock, RunLocked


def test_live_run_lock_refuses_a_second_run_naming_the_first(tmp_path):
    with RunLock(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunLocked, match=rf"in use by another train.align run \(pid {os.getpid()} on .*started "):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / LOCK_FILE).exists()


def test_stale_lock_of_a_killed_run_is_taken_over_saying_so(tmp_path):
    # a real process that held the lock and died without releasing it
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from train.run_lock import RunLock
        RunLock({str(tmp_path)!r}).__enter__()
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    dead = json.loads((tmp_path / LOCK_FILE).read_text())
    notes = []
    with RunLock(tmp_path, notes.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and "no longer running" in notes[0] and f"pid {dead['pid']}" in notes[0]


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(make_train_config, tmp_path):
    output = tmp_path / "run"
    train(make_train_config(output, run={"save_every": 2, "keep_last": 3}))
    saved = checkpoints.checkpoints(output)
    assert [p.name for p in saved] == ["step-00000002", "step-00000004", "step-00000006"]
    (saved[-1] / "trainer.pt").write_bytes(b"")  # a disk that filled up while saving
    notes = []
    path, _, trainer = checkpoints.load_latest_intact(output, notes.append)
    assert path == saved[-2] and trainer["step"] == 4
    assert len(notes) == 1 and saved[-1].name in notes[0] and "damaged" in notes[0]


def test_a_second_run_into_a_live_runs_folder_is_refused(make_train_config, tools, tmp_path, capsys):
    output = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(tools.repo)!r})
        from train.run_lock import RunLock
        RunLock({str(output)!r}).__enter__()
        print("locked", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = tools.write_config(make_train_config(output), tmp_path / "run.yaml")
        assert align.main(["--config", str(config)]) == 2
        error = capsys.readouterr().err
        assert f"pid {holder.pid}" in error and "in use by another train.align run" in error
        assert not checkpoints.checkpoints(output) and not (output / "aligner.safetensors").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_fresh_run_never_replaces_an_exported_aligner(make_train_config, tools, tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "aligner.safetensors").write_bytes(b"the user's aligner from an earlier run")
    config = tools.write_config(make_train_config(output), tmp_path / "run.yaml")
    assert align.main(["--config", str(config)]) == 2
    assert "aligner.safetensors" in capsys.readouterr().err
    assert (output / "aligner.safetensors").read_bytes() == b"the user's aligner from an earlier run"


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(make_train_config, tools, tmp_path):
    config = tools.write_config(make_train_config(tmp_path / "run", optim={"max_steps": 100000},
                                                  run={"log_every": 1, "save_every": 5}), tmp_path / "run.yaml")
    process = subprocess.Popen([sys.executable, "-m", "train.align", "--config", str(config)], cwd=tools.repo,
                               env=tools.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("step 6/"):
            break
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130, errors[-2000:]
    assert "Traceback" not in errors
    assert re.search(r"interrupted at step \d+", errors) and f"--config {tmp_path / 'run' / 'config.yaml'} --resume" in errors
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released on the way out


def test_malformed_config_file_names_the_line(tmp_path, capsys):
    config = tmp_path / "my.yaml"
    config.write_text("data:\n  train: [a, b\nrun:\n  seed: 1\n")
    assert align.main(["--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "my.yaml is not valid YAML at line" in error and "Traceback" not in error
    config = tmp_path / "my.json"
    config.write_text('{"data": {"train": "x",}}')
    assert align.main(["--config", str(config)]) == 2
    assert "my.json is not valid JSON" in capsys.readouterr().err


def test_missing_decoder_folder_is_named(tmp_path, features, capsys):
    argv = ["--data.train", str(features["train"]), "--model.decoder", str(tmp_path / "no-such-t5"),
            "--run.output_dir", str(tmp_path / "run"), "--optim.max_steps", "1"]
    assert align.main(argv) == 2
    error = capsys.readouterr().err
    assert "model.decoder" in error and "no-such-t5" in error and "no such file or folder" in error


def test_demo_with_resume_says_what_resumes(capsys):
    assert align.main(["--demo", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "--demo" in error and "--resume" in error and "--config" in error


def test_precompute_skips_and_counts_a_picture_of_extreme_aspect_ratio(make_precompute_config, tiny_vlm_dirs, tmp_path):
    from PIL import Image

    from train.precompute import run as precompute

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "a_square.png")
    Image.new("RGB", (28 * 300, 28), (30, 30, 200)).save(folder / "b_panorama.png")
    Image.new("RGB", (48, 64), (30, 200, 30)).save(folder / "c_portrait.png")
    (folder / "captions.jsonl").write_text("".join(
        json.dumps({"image": name, "caption": name}) + "\n" for name in ("a_square.png", "b_panorama.png", "c_portrait.png")))

    summary = precompute(make_precompute_config(tiny_vlm_dirs("qwen2_vl"), folder, tmp_path / "out", batch_size=3))

    assert summary["unreadable"] == 1 and summary["images"] == 2
    stats = json.loads((tmp_path / "out" / "000000.stats.json").read_text())
    assert "b_panorama" in stats["skipped_details"][0] and "aspect ratio 300:1" in stats["skipped_details"][0]


def test_demo_refuses_options_it_would_ignore(capsys):
    assert align.main(["--demo", "--optim.lr", "1"]) == 2
    assert "--optim.lr" in capsys.readouterr().err


def test_demo_refuses_an_output_folder_with_files(tmp_path, capsys):
    from train import demo

    (tmp_path / "mine.txt").write_text("keep me")
    assert align.main(["--demo", "--run.output_dir", str(tmp_path)]) == 2
    assert demo.main(["--output", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "mine.txt").read_text() == "keep me"
