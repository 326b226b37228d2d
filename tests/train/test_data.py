"""Data sources: CC-SBU/LAION tar shards, image folders with captions.jsonl, and the stream's split across readers."""

import io
import itertools
import json

import pytest
import webdataset as wds
from torch.utils.data import DataLoader

from train.data import (TrainingStream, decode_feature_sample, expand_shards, image_units, tar_samples,
                        worker_batches_before)
from thinkdiff_core.testing.synthetic import shape_samples, write_image_folder, write_webdataset


def keys_of(units):
    return [(r.key, r.caption) for u in units for r in u.records()]


def test_tar_shards_and_folders_yield_images_with_captions(tmp_path):
    samples = shape_samples(10, seed=3)
    shards = write_webdataset(tmp_path / "wds", samples, per_shard=4)
    folder = write_image_folder(tmp_path / "folder", samples)
    from_tars = image_units(str(tmp_path / "wds" / "{00000..00002}.tar"))
    from_folder = image_units(str(folder), folder_chunk=4)
    assert [u.name for u in from_tars] == [str(s) for s in shards]
    assert len(from_folder) == 3
    assert [c for _, c in keys_of(from_tars)] == [s.caption for s in samples] == [c for _, c in keys_of(from_folder)]
    image = next(from_tars[0].records()).read()
    assert image.mode == "RGB" and image.size == (112, 112)


def test_json_caption_and_hf_imagefolder_names(tmp_path):
    samples = shape_samples(2, seed=4)
    with wds.TarWriter(str(tmp_path / "a.tar")) as writer:
        for s in samples:
            jpeg = io.BytesIO()
            s.image.save(jpeg, format="JPEG")
            writer.write({"__key__": s.key, "jpg": jpeg.getvalue(), "json": {"caption": s.caption}})
    assert [c for _, c in keys_of(image_units(str(tmp_path / "a.tar")))] == [s.caption for s in samples]
    folder = tmp_path / "hf"
    folder.mkdir()
    samples[0].image.save(folder / "x.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "text": "hello"}) + "\n")
    assert keys_of(image_units(str(folder))) == [("x.png", "hello")]


def test_paths_outside_the_folder_and_missing_shards_are_refused(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "captions.jsonl").write_text(json.dumps({"image": "../secret.png", "caption": "x"}) + "\n")
    with pytest.raises(ValueError, match="outside"):
        image_units(str(folder))
    with pytest.raises(FileNotFoundError, match="no shard"):
        expand_shards(str(tmp_path / "{0..2}.tar"))


@pytest.mark.parametrize("readers", [2, 5])  # fewer readers than shards (whole shards), more (every n-th sample)
def test_each_epoch_is_split_across_readers_without_duplicates(features, readers):
    shards = expand_shards(str(features["train"]))
    stream = TrainingStream(shards, decode_feature_sample, lambda s: True, None, 8, seed=1)
    everything = sorted(raw["__key__"] for shard in shards for raw in tar_samples(shard))
    for epoch in (0, 1):
        parts = [[raw["__key__"] for raw in stream.epoch(epoch, reader, readers)] for reader in range(readers)]
        merged = sorted(itertools.chain(*parts))
        assert merged == everything
        assert all(parts)


def test_workers_and_ranks_read_disjoint_batches(features):
    shards = expand_shards(str(features["train"]))

    def keys(rank, workers, count):
        stream = TrainingStream(shards, decode_feature_sample, lambda s: True, lambda s, rng: [x.key for x in s], 4,
                                seed=1, rank=rank, world_size=2, shuffle_buffer=8)
        loader = DataLoader(stream, batch_size=None, num_workers=workers)
        return [k for batch in itertools.islice(loader, count) for k in batch]

    ranks = [keys(0, 2, 2), keys(1, 2, 2)]  # 4 readers, 16 samples: first epoch only
    assert len(set(ranks[0] + ranks[1])) == 16


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_resume_skips_exactly_the_consumed_batches(features, workers):
    shards = expand_shards(str(features["train"]))

    def batches(skip, count):
        stream = TrainingStream(shards, decode_feature_sample, lambda s: True,
                                lambda s, rng: ([x.key for x in s], rng.random()), 4, seed=3, shuffle_buffer=8,
                                skip_batches=skip)
        return list(itertools.islice(DataLoader(stream, batch_size=None, num_workers=workers), count))

    assert batches(0, 7)[5:] == batches(5, 2)
    assert batches(0, 6)[4:] == batches(4, 2)
    assert [worker_batches_before(5, w, 3) for w in range(3)] == [2, 2, 1]
