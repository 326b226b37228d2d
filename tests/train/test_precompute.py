"""Precompute: resumable, equal to the core library's features, robust to corrupt images."""

import json

import torch
import webdataset as wds

from thinkdiff_core.prompts import Prompt
from thinkdiff_core.vlm import GenerationSettings
from train.data import MANIFEST, decode_feature_sample, expand_shards, image_units, tar_samples
from train.precompute import BRIEF_INSTRUCTIONS, batch_seed
from train.precompute import run as precompute
from thinkdiff_core.testing.synthetic import shape_samples, write_webdataset


def stored(folder):
    return [decode_feature_sample(raw) for shard in expand_shards(str(folder)) for raw in tar_samples(shard)]


def test_features_equal_the_core_library_for_the_same_image_and_seed(features, shape_folders, load_tiny_vlm):
    vlm = load_tiny_vlm("qwen2_vl")
    samples = stored(features["held_out"])
    manifest = json.loads((features["held_out"] / MANIFEST).read_text())
    assert manifest["hidden_size"] == vlm.hidden_size and manifest["settings"]["instructions"] == BRIEF_INSTRUCTIONS
    images = {r.key: r.read() for r in image_units(str(shape_folders["held_out"]))[0].records()}
    batch = [s for s in samples if s.meta["batch"] == 1]
    assert len(batch) == 8 and {s.meta["instruction"] for s in samples} <= set(BRIEF_INSTRUCTIONS)
    assert batch[0].meta["seed"] == batch_seed(42, 0, 1)
    prompts = [Prompt([images[s.meta["source_key"]], s.meta["instruction"]], vision_ids=False) for s in batch]
    expected = vlm.generate(prompts, GenerationSettings(seed=batch[0].meta["seed"], max_new_tokens=12, min_new_tokens=6))
    for row, sample in enumerate(batch):
        length = expected.lengths[row]
        assert sample.features.dtype == torch.bfloat16 and sample.length == length
        assert torch.equal(sample.features, expected.features[row, :length].to(torch.bfloat16))
        assert torch.equal(sample.token_ids, expected.token_ids[row, :length])
        assert sample.meta["text"] == expected.texts[row]


def test_resume_skips_finished_shards_and_redoes_only_the_missing_one(make_precompute_config, tiny_vlm_dirs,
                                                                      shape_folders, tmp_path):
    config = make_precompute_config(tiny_vlm_dirs("qwen2_vl"), shape_folders["train"], tmp_path / "out")
    first = precompute(config)
    assert first["done"] == 3 and first["images"] == 48
    shards = sorted((tmp_path / "out").glob("*.tar"))
    before = {s.name: s.stat().st_mtime_ns for s in shards}
    original = stored(tmp_path / "out")
    shards[1].unlink()

    second = precompute(config)

    assert second["already_done"] == 2 and second["done"] == 1 and second["images"] == 16
    assert {s.name: s.stat().st_mtime_ns for s in shards if s != shards[1]} == \
        {k: v for k, v in before.items() if k != shards[1].name}
    again = stored(tmp_path / "out")
    assert [s.key for s in again] == [s.key for s in original]
    assert all(torch.equal(a.features, b.features) and a.meta == b.meta for a, b in zip(again, original))
    assert precompute(config)["done"] == 0


def test_changed_settings_are_refused_on_resume(make_precompute_config, tiny_vlm_dirs, shape_folders, tmp_path):
    precompute(make_precompute_config(tiny_vlm_dirs("qwen2_vl"), shape_folders["held_out"], tmp_path / "out", limit=8))
    (tmp_path / "out" / "000000.tar").unlink()
    try:
        precompute(make_precompute_config(tiny_vlm_dirs("qwen2_vl"), shape_folders["held_out"], tmp_path / "out", limit=8,
                                     temperature=1.0))
    except ValueError as error:
        assert "temperature" in str(error) and "another --output" in str(error)
    else:
        raise AssertionError("a changed temperature was accepted")


def test_corrupt_image_is_skipped_and_counted(make_precompute_config, tiny_vlm_dirs, tmp_path):
    samples = shape_samples(5, seed=5)
    write_webdataset(tmp_path / "wds", samples, per_shard=8)
    broken = tmp_path / "wds" / "00000.tar"
    raws = list(tar_samples(str(broken)))
    raws[2]["jpg"] = b"\xff\xd8 not really a jpeg"
    with wds.TarWriter(str(broken)) as writer:
        for raw in raws:
            writer.write({k: v for k, v in raw.items() if k in ("__key__", "jpg", "txt", "json")})

    summary = precompute(make_precompute_config(tiny_vlm_dirs("qwen2_vl"), broken, tmp_path / "out", batch_size=2))

    assert summary["unreadable"] == 1 and summary["images"] == 4
    stats = json.loads((tmp_path / "out" / "000000.stats.json").read_text())
    assert stats["skipped"] == 1 and samples[2].key in stats["skipped_details"][0]
    kept = stored(tmp_path / "out")
    assert [s.meta["source_key"] for s in kept] == [s.key for i, s in enumerate(samples) if i != 2]
    assert [s.meta["caption"] for s in kept] == [s.caption for i, s in enumerate(samples) if i != 2]


def test_ranks_take_disjoint_units(make_precompute_config, tiny_vlm_dirs, shape_folders, tmp_path):
    done = {}
    for rank in (0, 1):
        precompute(make_precompute_config(tiny_vlm_dirs("qwen2_vl"), shape_folders["train"], tmp_path / f"out{rank}",
                                     rank=rank, world_size=2))
        done[rank] = sorted(p.name for p in (tmp_path / f"out{rank}").glob("*.tar"))
    assert done == {0: ["000000.tar", "000002.tar"], 1: ["000001.tar"]}


def test_training_prompts_are_rendered_without_picture_labels(load_tiny_vlm, colour_images):
    """The reference precompute renders its one image without Qwen's "Picture 1:" label; CoBSAT prompts keep it."""
    vlm = load_tiny_vlm("qwen2_vl")
    image = colour_images("red")[0]
    plain = vlm.render(Prompt([image, BRIEF_INSTRUCTIONS[0]], vision_ids=False))
    labelled = vlm.render(Prompt([image, BRIEF_INSTRUCTIONS[0]]))
    assert "Picture 1:" not in plain and "<|vision_start|><|image_pad|><|vision_end|>Describe" in plain
    assert labelled == plain.replace("<|vision_start|>", "Picture 1: <|vision_start|>")
