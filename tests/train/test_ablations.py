"""The paper's ablations as switches: each changes what the aligner sees and nothing else.

`train.precompute --features input|both` stores the prompt tokens' states beside the generated ones
(which stay byte for byte what `--features generated` stores); `LvlmBatches.features` feeds them to
the aligner; `masking="none"` shows all generated tokens and targets all of their text.
"""

import random

import pytest
import torch
from transformers import AutoTokenizer

from thinkdiff_core.prompts import Prompt
from train.data import FeatureSample, decode_feature_sample, expand_shards, image_units, tar_samples
from train.precompute import run as precompute
from train.recipe import LvlmBatches, feature_mask


def stored(folder):
    return [decode_feature_sample(raw) for shard in expand_shards(str(folder)) for raw in tar_samples(shard)]


@pytest.fixture(scope="module")
def tokenizers(tiny_vlm_dirs, tiny_t5_dir):
    return AutoTokenizer.from_pretrained(tiny_vlm_dirs("qwen2_vl")), AutoTokenizer.from_pretrained(tiny_t5_dir)


def samples_with_prompts(count: int = 4, hidden: int = 8) -> list[FeatureSample]:
    rng = torch.Generator().manual_seed(0)
    return [FeatureSample(f"k{i}", torch.randn(10 + i, hidden, generator=rng), torch.randint(20, 200, (10 + i,), generator=rng),
                          {}, input_features=torch.randn(5 + 2 * i, hidden, generator=rng)) for i in range(count)]


def build(tokenizers, **switches):
    return LvlmBatches(*tokenizers, max_split=128, max_target_tokens=24, **switches)


@pytest.mark.parametrize("features", ["input", "both"])
def test_feature_switch_changes_only_the_aligner_input(tokenizers, features):
    samples = samples_with_prompts()
    reference = build(tokenizers)(samples, random.Random(3))
    ablation = build(tokenizers, features=features)(samples, random.Random(3))
    assert ablation["targets"] == reference["targets"] and torch.equal(ablation["labels"], reference["labels"])
    for row, sample in enumerate(samples):
        split = reference["splits"][row]
        expected = sample.input_features if features == "input" else torch.cat([sample.input_features,
                                                                                sample.features[:split]])
        length = ablation["splits"][row]
        assert length == expected.shape[0]
        assert torch.equal(ablation["features"][row, :length], expected)
        assert not ablation["features"][row, length:].any()
        assert feature_mask(ablation)[row].sum() == length


def test_no_masking_shows_every_token_and_targets_all_of_their_text(tokenizers):
    samples = samples_with_prompts()
    batch = build(tokenizers, masking="none")(samples, random.Random(3))
    vlm_tokenizer = tokenizers[0]
    for row, sample in enumerate(samples):
        assert batch["splits"][row] == sample.length
        assert torch.equal(batch["features"][row, :sample.length], sample.features)
        assert batch["targets"][row] == vlm_tokenizer.decode(sample.token_ids.tolist(), skip_special_tokens=True)


def test_input_features_are_required_and_unknown_switches_refused(tokenizers):
    plain = FeatureSample("old", torch.ones(4, 8), torch.arange(20, 24), {})
    with pytest.raises(ValueError, match="precompute --features input"):
        build(tokenizers, features="input")([plain], random.Random(0))
    with pytest.raises(ValueError, match="data.masking must be one of"):
        build(tokenizers, masking="sometimes")


def test_precompute_features_both_adds_the_prompt_states_and_changes_nothing_else(
        make_precompute_config, tiny_vlm_dirs, shape_folders, features, load_tiny_vlm, tmp_path):
    config = make_precompute_config(tiny_vlm_dirs("qwen2_vl"), shape_folders["held_out"], tmp_path / "both",
                                    features="both")
    precompute(config)
    both, generated = stored(tmp_path / "both"), stored(features["held_out"])
    assert [s.key for s in both] == [s.key for s in generated]
    for ours, reference in zip(both, generated):
        assert torch.equal(ours.features, reference.features) and torch.equal(ours.token_ids, reference.token_ids)
        assert ours.meta == reference.meta and reference.input_features is None
    vlm = load_tiny_vlm("qwen2_vl")
    images = {r.key: r.read() for r in image_units(str(shape_folders["held_out"]))[0].records()}
    sample = both[0]
    inputs = vlm.prepare([Prompt([images[sample.meta["source_key"]], sample.meta["instruction"]], vision_ids=False)])
    assert sample.input_features.shape == (inputs["input_ids"].shape[1], vlm.hidden_size)
    with torch.no_grad():
        inputs["pixel_values"] = inputs["pixel_values"].to(vlm.model.dtype)
        states = vlm.model.model(**inputs).last_hidden_state[0]
    torch.testing.assert_close(sample.input_features.float(), states.to(torch.bfloat16).float(), atol=2e-2, rtol=0)


def flat(tree, prefix=""):
    return {f"{prefix}{k}": v for key, value in tree.items()
            for k, v in (flat(value, f"{key}.").items() if isinstance(value, dict) else [(key, value)])}


@pytest.mark.parametrize("preset, changed", [
    ("thinkdiff-lvlm-no-masking", {"data.masking": "none"}),
    ("thinkdiff-lvlm-input-tokens", {"data.features": "input"}),
])
def test_ablation_presets_are_the_reference_but_for_their_switch(preset, changed):
    from train import config as cfg
    from train.config import TrainConfig

    reference = flat(cfg.to_dict(cfg.merge(TrainConfig(), cfg.read_preset("thinkdiff-lvlm"))))
    ablation = flat(cfg.to_dict(cfg.merge(TrainConfig(), cfg.read_preset(preset))))
    differs = {k: v for k, v in ablation.items() if reference[k] != v}
    assert differs == {**changed, "run.output_dir": f"runs/{preset}"}


def test_training_features_follow_the_manifest_and_input_needs_prompt_states(features, tiny_t5_dir):
    from train.decoder import load_decoder
    from train.variants import LvlmVariant

    decoder = load_decoder(str(tiny_t5_dir), keep_encoder=False, vision_encoder=None)
    batches = LvlmVariant.batches(decoder, str(features["train"]), None, 128, 32, 24)
    assert (batches.features, batches.masking) == ("generated", "random")
    assert LvlmVariant.batches(decoder, str(features["train"]), None, 128, 32, 24, masking="none").masking == "none"
    with pytest.raises(ValueError, match="train.precompute --features input"):
        LvlmVariant.batches(decoder, str(features["train"]), None, 128, 32, 24, features="input")
