"""`python -m train.cobsat`'s options: a `--config` file, the values left at null, and the one-line refusals."""

import json
from pathlib import Path

import pytest
import yaml

from train.cobsat import harness
from train.cobsat.harness import generation_config
from train.cobsat.options import CobsatConfig, GenerationOptions, resolved


def refused(capsys, *argv) -> str:
    """The error of a run that must stop before doing anything: exit code 2 and one `error:` line."""
    assert harness.main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err.removeprefix("error: ").rstrip("\n")


def test_a_yaml_config_runs_a_tiny_generate_and_flags_override_it(tmp_path, capsys):
    out = tmp_path / "run"
    path = tmp_path / "cobsat.yaml"
    path.write_text(yaml.safe_dump({"tiny": True, "out": str(out), "stages": ["generate"], "tasks": [1], "shots": [2],
                                    "num_prompts": 1, "generation": {"batch_size": 1, "steps": 1, "max_new_tokens": 4,
                                                                     "seed": 3}}))
    assert harness.main(["--config", str(path), "--generation.seed", "5"]) == 0
    assert "generated: 1" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text()) == {
        "models": "tiny", "seed": 5, "batch_size": 1, "steps": 1, "guidance": 3.5, "size": 64, "temperature": 0.6,
        "top_p": 0.9, "max_new_tokens": 4, "min_new_tokens": 4}
    assert len(list((out / "images").rglob("*.jpg"))) == 1


def test_run_json_keeps_the_keys_and_values_existing_run_folders_hold():
    config = resolved(CobsatConfig(out="o", cobsat_dir="c"))
    assert generation_config(config, "thinkdiff+text") == {
        "vlm": "Qwen/Qwen2-VL-7B-Instruct", "aligner": "Mifucius/ThinkDiff/thinkdiff_lvlm.pth",
        "flux": "black-forest-labs/FLUX.1-dev", "dtype": "auto", "method": "thinkdiff+text", "text_prompt": "{word}",
        "seed": 0, "batch_size": 8, "steps": 28, "guidance": 3.5, "size": 512, "temperature": 0.6, "top_p": 0.9,
        "max_new_tokens": 128, "min_new_tokens": 128}
    assert list(generation_config(config)) == ["vlm", "aligner", "flux", "dtype", "seed", "batch_size", "steps",
                                               "guidance", "size", "temperature", "top_p", "max_new_tokens",
                                               "min_new_tokens"]


def test_options_left_at_null_take_the_reference_or_tiny_values_in_a_new_config():
    given = CobsatConfig(out="o", cobsat_dir="c")
    full = resolved(given)
    assert given == CobsatConfig(out="o", cobsat_dir="c")  # not changed in place
    gen, judge = full.generation, full.judge
    assert (full.num_prompts, gen.steps, gen.size, gen.max_new_tokens, gen.min_new_tokens) == (1000, 28, 512, 128, 128)
    assert (judge.kind, judge.max_new_tokens, judge.dtype, judge.model) == ("llava", 512, None, None)
    tiny = resolved(CobsatConfig(out="o", tiny=True))
    gen, judge = tiny.generation, tiny.judge
    assert (tiny.num_prompts, gen.steps, gen.size, gen.max_new_tokens, gen.min_new_tokens) == (2, 2, 64, 16, 16)
    assert (judge.kind, judge.max_new_tokens, tiny.cobsat_dir) == ("qwen", 8, str(Path("o") / "synthetic_cobsat"))
    kept = resolved(CobsatConfig(out="o", tiny=True, generation=GenerationOptions(steps=5, min_new_tokens=0)))
    assert (kept.generation.steps, kept.generation.min_new_tokens, kept.generation.max_new_tokens) == (5, 0, 16)


@pytest.mark.parametrize("flag, value, message", [
    ("--generation.dtype", "fp8", "generation.dtype must be one of auto, bf16, fp16, fp32; got 'fp8'."),
    ("--generation.offload", "cpu", "generation.offload must be one of none, model, sequential; got 'cpu'."),
    ("--generation.methods", "thinkdiff,text",
     "generation.methods must be one of thinkdiff, thinkdiff+text, vlm-text; got 'text'."),
    ("--stages", "generate,jduge", "stages must be one of generate, judge, clip, report; got 'jduge'."),
    ("--judge.kind", "gpt", "judge.kind must be one of llava, qwen; got 'gpt'."),
    ("--judge.dtype", "int8", "judge.dtype must be one of auto, bf16, fp16, fp32; got 'int8'."),
])
def test_a_value_outside_its_choices_is_refused_in_one_line(tmp_path, capsys, flag, value, message):
    assert refused(capsys, "--tiny", "--out", str(tmp_path / "run"), flag, value) == message
    assert not (tmp_path / "run").exists()


def test_a_file_is_checked_like_the_flags(tmp_path, capsys):
    path = tmp_path / "cobsat.yaml"
    path.write_text("generation:\n  dtype: fp8\n")
    assert refused(capsys, "--tiny", "--out", str(tmp_path / "run"), "--config", str(path)) == (
        "generation.dtype must be one of auto, bf16, fp16, fp32; got 'fp8'.")
    path.write_text("generation:\n  stepz: 3\n")
    assert refused(capsys, "--tiny", "--out", str(tmp_path / "run"), "--config", str(path)).startswith(
        "Unknown config key(s) ['generation.stepz']; known keys: generation.vlm, ")
    assert not (tmp_path / "run").exists()


def test_the_old_flag_spelling_is_refused_not_ignored(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        harness.main(["--tiny", "--out", str(tmp_path / "run"), "--num-prompts", "1"])
    assert stop.value.code == 2 and "unrecognized arguments: --num-prompts 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    ([], "give --out (the run folder for images, judgements and reports)."),
    (["--out", "o"], "--cobsat_dir is required (a CoBSAT checkout with datasets/), or use --tiny."),
    (["--tiny", "--out", "o", "--shard", "2", "--num_shards", "2"], "--shard 2 is outside 0..1 (--num_shards 2)."),
    (["--tiny", "--out", "o", "--generation.vlm", "v", "--judge.model", "j"],
     "--tiny builds its own models; drop --generation.vlm, --judge.model or drop --tiny."),
])
def test_options_that_must_agree_are_refused_in_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert refused(capsys, *argv) == message
    assert not (tmp_path / "o").exists()
