"""The ThinkDiff-CLIP recipe: caption cleaning and word split as the reference, image tokens first, only the aligner
learns, and a tiny run exports an aligner that the library reads as CLIP."""

import io
import pickle
import random
from collections import Counter

import pytest
import torch
import webdataset as wds
from accelerate import Accelerator
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from thinkdiff_core.checkpoint import is_aligner_file, load_aligner
from thinkdiff_core.testing.tiny import TINY_BLIP2_VISION_WIDTH
from thinkdiff_core.tokens import CLIP_RECIPE
from thinkdiff_core.variants import check_parts
from train.align import train, train_step
from train.config import OptimOptions
from train.data import CaptionedImage, TrainingStream, decode_captioned_image, image_units
from train.decoder import decoder_loss, encoder_states, new_aligner, proxy_loss
from train.evaluate import main as evaluate_main
from train.optim import make_optimizer
from train.recipe import IGNORE_INDEX, ClipBatches, clean_caption, split_caption
from thinkdiff_core.testing.synthetic import all_captions

WORDS = sorted({w for c in all_captions() for w in c.split()}) + ["Red", "STAR.", "(big)", "a:b", "x;y", "~z", "#1"]


@pytest.fixture(scope="module")
def batches(clip_proxy):
    return ClipBatches(clip_proxy.tokenizer, clip_proxy.vision.image_processor, max_prefix_tokens=6,
                       max_target_tokens=8, keep_prefix=True)


def captioned(caption: str, key: str = "k") -> CaptionedImage:
    return CaptionedImage(key, Image.new("RGB", (8, 8), "red"), caption)


def test_captions_are_cleaned_as_blip_caption():
    assert clean_caption('  A Red STAR!! (big)  on "the"   grass.\n') == "a red star big on the grass"
    assert clean_caption("one:two;three~four#five*six") == "one two three four five six"
    assert clean_caption("tab\tkept, comma kept") == "tab\tkept, comma kept"  # single whitespace is not collapsed
    assert clean_caption("\na cat\t") == "\na cat\t"  # only a trailing newline and outer spaces are stripped
    assert clean_caption(" ".join(f"w{i}" for i in range(60))) == " ".join(f"w{i}" for i in range(50))
    assert clean_caption("...") == ""


def test_word_split_is_the_references_random_split_string():
    rng = random.Random(0)
    assert split_caption("alone", rng) == (0, "", "alone")  # one word: the T5 encoder reads only EOS
    assert split_caption("", rng) == (0, "", "")
    counts = Counter(split_caption("a b c d e", rng)[0] for _ in range(4000))
    assert sorted(counts) == [1, 2, 3, 4] and all(850 < c < 1150 for c in counts.values())
    for seed in range(30):
        split, first, rest = split_caption("a b c d e", random.Random(seed))
        assert (first, rest) == (" ".join("abcde"[:split]), " ".join("abcde"[split:]))


@settings(max_examples=40, deadline=None)
@given(captions=st.lists(st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join), min_size=1, max_size=4),
       seed=st.integers(0, 2**31))
def test_t5_encoder_reads_the_first_words_and_labels_are_the_rest(batches, captions, seed):
    batch = batches([captioned(c, f"k{i}") for i, c in enumerate(captions)], random.Random(seed))
    tokenizer = batches.t5_tokenizer
    assert batch["pixel_values"].shape == (len(captions), 3, 224, 224)
    for row, caption in enumerate(captions):
        words, split = clean_caption(caption).split(" "), batch["splits"][row]
        assert split == 0 if len(words) <= 1 else 1 <= split <= len(words) - 1
        assert batch["prefixes"][row] == " ".join(words[:split])
        assert batch["targets"][row] == (" ".join(words[split:]) if split else clean_caption(caption))

        prefix = tokenizer(batch["prefixes"][row], truncation=True, max_length=batches.max_prefix_tokens)["input_ids"]
        width = batch["prefix_ids"].shape[1]
        assert batch["prefix_ids"][row].tolist() == prefix + [tokenizer.pad_token_id] * (width - len(prefix))
        assert batch["prefix_mask"][row].tolist() == [1] * len(prefix) + [0] * (width - len(prefix))

        target = tokenizer(batch["targets"][row], truncation=True, max_length=batches.max_target_tokens)["input_ids"]
        labels = batch["labels"][row]
        assert labels[: len(target)].tolist() == target
        assert (labels[len(target):] == IGNORE_INDEX).all()


def test_image_tokens_come_first_then_the_t5_encoding_of_the_caption_start(batches, clip_proxy, vision_encoder):
    images = [Image.new("RGB", (40, 30), c) for c in ("red", "blue", "green")]
    samples = [CaptionedImage(f"k{i}", im, c) for i, (im, c) in
               enumerate(zip(images, ["a red star", "a blue ring on a plain background", "green"]))]
    batch = batches(samples, random.Random(1))
    aligner = new_aligner(TINY_BLIP2_VISION_WIDTH, clip_proxy, seed=0)
    with torch.no_grad():
        states, mask = encoder_states(aligner, clip_proxy, batch, torch.device("cpu"))
        image = aligner(vision_encoder.encode_each(images).features)
        prefix = clip_proxy.model.encoder(input_ids=batch["prefix_ids"], attention_mask=batch["prefix_mask"])[0]
    tokens = vision_encoder.tokens_per_image
    assert image.shape[1] == tokens == 65
    assert states.shape == (3, tokens + batch["prefix_ids"].shape[1], clip_proxy.hidden_size)
    assert torch.allclose(states[:, :tokens], image, atol=1e-6)
    assert torch.allclose(states[:, tokens:], prefix, atol=1e-6)
    assert mask[:, :tokens].eq(1).all() and torch.equal(mask[:, tokens:], batch["prefix_mask"])
    assert batch["prefix_ids"][2].tolist()[:1] == [clip_proxy.tokenizer.eos_token_id]  # one word: EOS only


def test_padding_of_the_caption_start_and_of_the_labels_does_not_change_the_loss(batches, clip_proxy):
    batch = batches([captioned("a red star on a plain background", "a"), captioned("a blue ring", "b")],
                    random.Random(3))
    padded = dict(batch)
    padded["prefix_ids"] = torch.cat([batch["prefix_ids"], torch.full((2, 3), 7)], 1)  # masked out: any token
    padded["prefix_mask"] = torch.cat([batch["prefix_mask"], torch.zeros(2, 3, dtype=torch.long)], 1)
    padded["labels"] = torch.cat([batch["labels"], torch.full((2, 2), IGNORE_INDEX)], 1)
    aligner = new_aligner(TINY_BLIP2_VISION_WIDTH, clip_proxy, seed=0)
    with torch.no_grad():
        plain, _ = proxy_loss(aligner, clip_proxy, batch, torch.device("cpu"))
        extended, _ = proxy_loss(aligner, clip_proxy, padded, torch.device("cpu"))
        states, mask = encoder_states(aligner, clip_proxy, batch, torch.device("cpu"))
        direct, _ = decoder_loss(clip_proxy.model, states, mask, batch["labels"])
    assert extended.item() == pytest.approx(plain.item(), rel=1e-5)
    assert direct.item() == pytest.approx(plain.item(), rel=1e-6)


def test_one_clip_step_changes_only_the_aligner(batches, clip_proxy):
    assert "encoder" in dict(clip_proxy.model.named_children())
    assert not clip_proxy.vision.model.training and clip_proxy.model.training  # tower in eval, T5 as the reference
    frozen = {f"t5.{k}": v.clone() for k, v in clip_proxy.model.state_dict().items()}
    frozen.update({f"vision.{k}": v.clone() for k, v in clip_proxy.vision.model.state_dict().items()})
    aligner = new_aligner(TINY_BLIP2_VISION_WIDTH, clip_proxy, seed=0)
    assert torch.equal(aligner[3].weight, clip_proxy.model.encoder.final_layer_norm.weight)
    before = {k: v.clone() for k, v in aligner.state_dict().items()}
    accelerator = Accelerator(cpu=True)
    prepared = accelerator.prepare(aligner)
    options = OptimOptions(lr=1e-3, warmup_steps=0)
    batch = batches([captioned(c, str(i)) for i, c in enumerate(all_captions()[:6])], random.Random(0))

    loss, _ = train_step(accelerator, prepared, clip_proxy, make_optimizer(aligner, options), [batch], 0, options, seed=0)

    assert torch.isfinite(loss)
    after = {f"t5.{k}": v for k, v in clip_proxy.model.state_dict().items()}
    after.update({f"vision.{k}": v for k, v in clip_proxy.vision.model.state_dict().items()})
    assert after.keys() == frozen.keys()
    for key, value in after.items():
        assert torch.equal(value, frozen[key]), f"frozen tensor {key} changed"
    assert not any(p.requires_grad for p in [*clip_proxy.model.parameters(), *clip_proxy.vision.model.parameters()])
    for key, value in aligner.state_dict().items():
        assert not torch.equal(value, before[key]), f"aligner tensor {key} did not move"


def test_unreadable_images_are_skipped_not_fatal(tmp_path):
    with wds.TarWriter(str(tmp_path / "bad.tar")) as writer:
        jpeg = io.BytesIO()
        Image.new("RGB", (8, 8), "blue").save(jpeg, format="JPEG")
        writer.write({"__key__": "good", "jpg": jpeg.getvalue(), "txt": "a blue square"})
        writer.write({"__key__": "broken", "jpg": b"not a jpeg", "txt": "a lost picture"})
        writer.write({"__key__": "silent", "jpg": jpeg.getvalue()})
    with pytest.warns(UserWarning, match="broken"):
        samples = [decode_captioned_image(r) for r in image_units(str(tmp_path / "bad.tar"))[0].records()]
    assert [(s.key, ClipBatches.usable(s)) for s in samples] == [("good", True), ("broken", False), ("silent", False)]


def test_the_clip_stream_pickles_for_spawned_workers(batches, shape_shards):
    stream = TrainingStream(ClipBatches.shards(str(shape_shards), "data.train"), batches.decode, batches.usable,
                            batches, 4, seed=1, shuffle_buffer=8, read=batches.read)
    copy = pickle.loads(pickle.dumps(stream))
    first, again = next(iter(stream)), next(iter(copy))
    assert first["keys"] == again["keys"] and first["splits"] == again["splits"]
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and torch.equal(first["labels"], again["labels"])


def test_tiny_clip_run_exports_an_aligner_the_library_reads_as_clip(make_clip_config, vision_encoder, capsys):
    config = make_clip_config(data={"batch_size": 8, "eval_samples": 16}, optim={"max_steps": 4})
    summary = train(config)
    assert summary["steps"] == 4 and summary["ranks_in_sync"]

    aligner = load_aligner(summary["aligner"])
    assert aligner.info.variant == "clip" and aligner.info.token_recipe == CLIP_RECIPE
    assert aligner.info.source_model_id == vision_encoder.model_id
    assert aligner.info.provenance["recipe"] == "thinkdiff-clip"
    assert aligner.info.provenance["vision_encoder"] == vision_encoder.model_id
    assert aligner.module.input_size == TINY_BLIP2_VISION_WIDTH and aligner.module.output_size == 64
    images = [Image.new("RGB", (50, 70), "red"), Image.new("RGB", (90, 60), "white")]
    aligned = aligner(vision_encoder.encode(images))
    assert aligned.shape == (1, 2 * 65, 64) and torch.isfinite(aligned).all()
    assert is_aligner_file(summary["aligner"])  # what the nodes' aligner list takes
    check_parts(aligner, None, vision_encoder)  # what ThinkDiffPipeline checks before loading FLUX
    with pytest.raises(ValueError, match="CLIP aligner"):
        check_parts(aligner, object(), None)

    capsys.readouterr()
    assert evaluate_main(["--aligner", summary["aligner"], "--decoder", config.model.decoder, "--data",
                          config.data.eval, "--vision_encoder", config.model.vision_encoder, "--batch_size", "8",
                          "--samples", "16", "--decoder_dtype", "fp32", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "image + caption start" in printed and "samples: 16" in printed
    loss = float(next(line for line in printed.splitlines() if line.startswith("loss:")).split()[1])
    assert loss == pytest.approx(summary["eval/loss"], rel=1e-4)  # the same held-out batches as training measured
    assert evaluate_main(["--aligner", summary["aligner"], "--variant", "lvlm", "--data", config.data.eval]) == 2
    assert "ThinkDiff-CLIP aligner but --variant is lvlm" in capsys.readouterr().err
