"""The LVLM random split: the aligner sees exactly tokens [:s], the labels are T5 tokens of the text of [s:]."""

import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from train.data import FeatureSample
from train.recipe import IGNORE_INDEX, LvlmBatches, feature_mask
from train.variants import ClipVariant, training_variant


@pytest.fixture(scope="module")
def batches(tiny_vlm_dirs, tiny_t5_dir):
    return LvlmBatches(AutoTokenizer.from_pretrained(tiny_vlm_dirs("qwen2_vl")), AutoTokenizer.from_pretrained(tiny_t5_dir),
                       max_split=128, max_target_tokens=24)


def make_sample(key: str, token_ids: list[int], hidden: int = 8) -> FeatureSample:
    features = torch.arange(len(token_ids) * hidden, dtype=torch.float32).reshape(len(token_ids), hidden) + 1
    return FeatureSample(key, features.to(torch.bfloat16), torch.tensor(token_ids), {})


@settings(max_examples=40, deadline=None)
@given(data=st.data(), lengths=st.lists(st.integers(2, 300), min_size=1, max_size=5), seed=st.integers(0, 2**31))
def test_random_split_feeds_prefix_and_labels_the_rest(batches, data, lengths, seed):
    vocab = len(batches.vlm_tokenizer)
    samples = [make_sample(f"k{i}", data.draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n)))
               for i, n in enumerate(lengths)]
    batch = batches(samples, random.Random(seed))

    width = max(batch["splits"])
    assert batch["features"].shape == (len(samples), width, 8)
    for row, (sample, split) in enumerate(zip(samples, batch["splits"])):
        assert 1 <= split <= min(sample.length - 1, batches.max_split)
        assert torch.equal(batch["features"][row, :split], sample.features[:split])
        assert feature_mask(batch)[row].tolist() == [1] * split + [0] * (width - split)
        assert not batch["features"][row, split:].any()
        text = batches.vlm_tokenizer.decode(sample.token_ids[split:].tolist(), skip_special_tokens=True)
        assert batch["targets"][row] == text
        expected = batches.t5_tokenizer(text, truncation=True, max_length=batches.max_target_tokens)["input_ids"]
        labels = batch["labels"][row]
        assert labels[: len(expected)].tolist() == expected
        assert (labels[len(expected):] == IGNORE_INDEX).all()


def test_split_points_cover_the_whole_range_uniformly(batches):
    rng = random.Random(0)
    counts = Counter(batches.split_point(5, rng) for _ in range(4000))
    assert sorted(counts) == [1, 2, 3, 4]
    assert all(800 < c < 1200 for c in counts.values())
    assert {batches.split_point(1000, rng) for _ in range(3000)} == set(range(1, 129))


def test_samples_shorter_than_two_tokens_cannot_be_split(batches):
    assert not batches.usable(make_sample("a", [5]))
    assert batches.usable(make_sample("b", [5, 6]))


def test_unknown_variants_are_refused():
    assert training_variant("clip") is ClipVariant
    with pytest.raises(ValueError, match="lvlm"):
        training_variant("other")
