"""Configuration: files, presets, command-line overrides, --help, and the hint without a config."""

import argparse
import dataclasses
import json

import pytest

from train import config as cfg
from train.align import NO_CONFIG_HINT, build_parser, main
from train.config import TrainConfig


def leaf_names(values, prefix=""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from leaf_names(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_help_documents_every_option():
    text = build_parser().format_help()
    for name in leaf_names(cfg.to_dict(TrainConfig())):
        assert f"--{name}" in text, name
    assert "--demo" in text and "--preset" in text and "thinkdiff-lvlm" in text


def test_presets_list_every_option_and_match_the_reference():
    for name in cfg.presets():
        preset = cfg.read_preset(name)
        loaded = cfg.to_dict(cfg.from_dict(TrainConfig, preset))  # loads without unknown keys, every value kept
        assert {k: v for k, v in cfg.flatten(loaded).items() if k in cfg.flatten(preset)} == cfg.flatten(preset), name
    lvlm = cfg.merge(TrainConfig(), cfg.read_preset("thinkdiff-lvlm"))
    assert set(leaf_names(cfg.read_preset("thinkdiff-lvlm"))) == set(leaf_names(cfg.to_dict(TrainConfig())))
    assert (lvlm.optim.lr, lvlm.optim.warmup_lr, lvlm.optim.min_lr, lvlm.optim.warmup_steps) == (1e-4, 1e-6, 8e-5, 2000)
    assert (lvlm.optim.weight_decay, lvlm.data.batch_size, lvlm.data.max_split, lvlm.data.max_target_tokens) == \
        (0.05, 32, 128, 128)
    assert lvlm.model.decoder == "google/flan-t5-xxl" and lvlm.model.variant == "lvlm"
    assert set(leaf_names(cfg.read_preset("thinkdiff-clip"))) == set(leaf_names(cfg.to_dict(TrainConfig())))
    clip = cfg.merge(TrainConfig(), cfg.read_preset("thinkdiff-clip"))  # configs/train_thikdiff_clip.yaml
    assert clip.model.variant == "clip" and clip.model.vision_encoder == "Salesforce/blip2-flan-t5-xxl"
    assert (clip.optim.lr, clip.optim.warmup_lr, clip.optim.min_lr, clip.optim.warmup_steps, clip.optim.max_steps) == \
        (1e-4, 1e-6, 8e-5, 2000, 40 * 5000)
    assert (clip.optim.weight_decay, clip.optim.max_grad_norm, clip.data.batch_size) == (0.05, None, 42)
    assert (clip.data.max_prefix_tokens, clip.data.max_target_tokens, clip.run.mixed_precision) == (32, 32, "auto")


def test_file_then_flags_override_in_order(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"optim": {"lr": 0.5, "max_steps": 7}, "data": {"train": "x"}}))
    args = build_parser().parse_args(["--preset", "thinkdiff-lvlm", "--config", str(path), "--optim.lr", "2e-4",
                                      "--optim.max_grad_norm", "null", "--run.tensorboard", "true"])
    config = cfg.resolve(TrainConfig, args)
    assert config.optim.lr == 2e-4 and config.optim.max_steps == 7 and config.data.train == "x"
    assert config.optim.max_grad_norm is None and config.run.tensorboard is True
    assert config.data.num_workers == 8  # from the preset


def test_bad_values_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="optim.lrr"):
        cfg.from_dict(TrainConfig, {"optim": {"lrr": 1}})
    with pytest.raises(ValueError, match="data.batch_size"):
        cfg.from_dict(TrainConfig, {"data": {"batch_size": "many"}})
    with pytest.raises(ValueError, match="--run.tensorboard"):
        cfg.resolve(TrainConfig, build_parser().parse_args(["--run.tensorboard", "maybe"]))


def test_no_config_prints_the_demo_hint(capsys):
    assert main([]) == 2
    assert "python -m train.demo" in capsys.readouterr().err
    assert "python -m train.demo" in NO_CONFIG_HINT


def test_clip_preset_names_missing_data(capsys):
    assert main(["--preset", "thinkdiff-clip"]) == 2
    assert "data.train is empty" in capsys.readouterr().err


@pytest.mark.parametrize("section, key", [("data", "batch_size"), ("optim", "max_steps"), ("optim", "grad_accum"),
                                          ("run", "keep_last"), ("run", "log_every"), ("data", "max_target_tokens")])
def test_a_zero_count_is_refused_not_read_as_a_default(section, key, capsys):
    with pytest.raises(ValueError, match=rf"{section}\.{key} must be at least 1, got 0"):
        cfg.from_dict(TrainConfig, {section: {key: 0}})
    assert main(["--preset", "thinkdiff-lvlm", f"--{section}.{key}", "0"]) == 2
    assert f"error: {section}.{key} must be at least 1, got 0." in capsys.readouterr().err


def test_zero_is_kept_where_it_means_something():
    config = cfg.from_dict(TrainConfig, {"data": {"num_workers": 0}, "optim": {"warmup_steps": 0},
                                         "run": {"eval_every": 0, "save_every": 0, "show_samples": 0, "seed": 0}})
    assert (config.data.num_workers, config.optim.warmup_steps, config.run.eval_every, config.run.save_every) == (0,) * 4
    with pytest.raises(ValueError, match=r"data\.num_workers must be at least 0, got -1"):
        cfg.from_dict(TrainConfig, {"data": {"num_workers": -1}})


@dataclasses.dataclass
class Picked:
    mode: str = cfg.option("fast", "how", choices=("fast", "exact"))
    stages: list[str] = cfg.option(["a", "b"], "which", choices=("a", "b", "c"))
    counts: list[int] = cfg.option([1, 2], "how many")
    verbose: bool = cfg.option(False, "talk")


def picked(*flags):
    parser = argparse.ArgumentParser()
    cfg.add_arguments(parser, Picked)
    return cfg.resolve(Picked, parser.parse_args(list(flags)))


def test_choices_are_refused_outside_them_from_flags_and_files():
    assert picked("--mode", "exact", "--stages", "c,a").stages == ["c", "a"]
    with pytest.raises(ValueError, match=r"^mode must be one of fast, exact; got 'slow'\.$"):
        picked("--mode", "slow")
    with pytest.raises(ValueError, match=r"^stages must be one of a, b, c; got 'd'\.$"):
        picked("--stages", "a,d")
    with pytest.raises(ValueError, match="stages must be one of a, b, c; got 'd'"):
        cfg.from_dict(Picked, {"stages": ["d"]})


def test_list_items_take_the_fields_type_and_minimum():
    assert picked("--counts", "3,4").counts == [3, 4] and picked("--counts", "[5, 6]").counts == [5, 6]
    with pytest.raises(ValueError, match="--counts expects int, got 'x'"):
        picked("--counts", "3,x")
    with pytest.raises(ValueError, match="counts must be int, got 'x'"):
        cfg.from_dict(Picked, {"counts": [1, "x"]})
    with pytest.raises(ValueError, match="counts must be at least 1, got 0"):
        picked("--counts", "0")


def test_a_bare_boolean_flag_means_true_and_help_shows_choices_and_short_lists():
    assert picked("--verbose").verbose is True and picked("--verbose", "false").verbose is False
    parser = argparse.ArgumentParser()
    cfg.add_arguments(parser, Picked)
    text = " ".join(parser.format_help().split())
    assert "how; one of fast, exact (default: fast)" in text and "(default: a,b)" in text
