"""One training step: the aligner moves, the frozen T5 does not (bit for bit); the schedule is the reference's."""

import math
import random

import pytest
import torch
from accelerate import Accelerator

from train.step import train_step
from train.config import OptimOptions
from train.data import decode_feature_sample, expand_shards, tar_samples
from train.decoder import load_decoder, new_aligner, proxy_loss
from train.variants import vlm_tokenizer_for
from train.optim import learning_rate, make_optimizer
from train.recipe import LvlmBatches, feature_mask


def first_batch(features, decoder, size=8):
    batches = LvlmBatches(vlm_tokenizer_for(str(features["train"]), None), decoder.tokenizer, 128, 32)
    samples = [decode_feature_sample(r) for r in tar_samples(expand_shards(str(features["train"]))[0])][:size]
    return batches(samples, random.Random(0))


def test_one_step_changes_only_the_aligner(features, tiny_t5_dir):
    decoder = load_decoder(str(tiny_t5_dir), dtype="fp32")
    assert "encoder" not in dict(decoder.model.named_children())
    frozen = {k: v.clone() for k, v in decoder.model.state_dict().items()}
    aligner = new_aligner(64, decoder, seed=0)
    assert torch.equal(aligner[3].weight, decoder.encoder_norm_weight)
    before = {k: v.clone() for k, v in aligner.state_dict().items()}
    accelerator = Accelerator(cpu=True)
    prepared = accelerator.prepare(aligner)
    optimizer = make_optimizer(aligner, OptimOptions(lr=1e-3, warmup_steps=0))

    loss, lr = train_step(accelerator, prepared, decoder, optimizer, [first_batch(features, decoder)], 0,
                          OptimOptions(lr=1e-3, warmup_steps=0), seed=0)

    assert torch.isfinite(loss) and lr == pytest.approx(1e-3)
    for key, value in decoder.model.state_dict().items():
        assert torch.equal(value, frozen[key]), f"frozen decoder tensor {key} changed"
    assert not any(p.requires_grad for p in decoder.model.parameters())
    for key, value in aligner.state_dict().items():
        assert not torch.equal(value, before[key]), f"aligner tensor {key} did not move"


def test_loss_ignores_padded_features_and_pad_labels(features, tiny_t5_dir):
    """Appending zero features (mask 0) and pad labels (-100) leaves the loss unchanged."""
    decoder = load_decoder(str(tiny_t5_dir), dtype="fp32", dropout=0.0)
    aligner = new_aligner(64, decoder, seed=0)
    batch = first_batch(features, decoder, size=4)
    padded = dict(batch)
    padded["features"] = torch.cat([batch["features"], torch.randn(4, 3, 64).to(batch["features"].dtype)], 1)
    padded["labels"] = torch.cat([batch["labels"], torch.full((4, 2), -100)], 1)
    assert feature_mask(padded)[:, -3:].sum() == 0
    with torch.no_grad():
        plain, _ = proxy_loss(aligner, decoder, batch, torch.device("cpu"))
        extended, _ = proxy_loss(aligner, decoder, padded, torch.device("cpu"))
    assert extended.item() == pytest.approx(plain.item(), rel=1e-5)


def test_learning_rate_schedule_matches_the_reference():
    options = OptimOptions(lr=1e-4, warmup_lr=1e-6, min_lr=8e-5, warmup_steps=2000, max_steps=200_000)
    assert learning_rate(0, options) == pytest.approx(1e-6)
    assert learning_rate(1000, options) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5)
    assert learning_rate(2000, options) == pytest.approx(8e-5 + 2e-5 * 0.5 * (1 + math.cos(math.pi * 0.01)))
    assert learning_rate(200_000, options) == pytest.approx(8e-5)


def test_weight_decay_only_on_matrices(tiny_t5_dir):
    decoder = load_decoder(str(tiny_t5_dir), dtype="fp32")
    groups = make_optimizer(new_aligner(64, decoder, 0), OptimOptions()).param_groups
    assert [len(g["params"]) for g in groups] == [2, 3]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert all(p.ndim == 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
