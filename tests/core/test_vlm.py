"""The VLM wrapper against plain transformers: captured features, sampling, batching, loading errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from thinkdiff_core.prompts import Prompt, cobsat_prompt, compose_prompt
from thinkdiff_core.devices import resolve_dtype
from thinkdiff_core.vlm import GenerationSettings, VisionLanguageModel

GREEDY = GenerationSettings(seed=0, temperature=0.0, max_new_tokens=10, min_new_tokens=10)


def reforward_final_norm(vlm, prompt, generated_ids):
    """Final-norm states from one plain forward over prompt + generated ids (no cache, no hook tricks)."""
    inputs = vlm.prepare([prompt])
    extra = generated_ids.unsqueeze(0)
    kwargs = dict(inputs, input_ids=torch.cat([inputs["input_ids"], extra], 1))
    kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
    if "mm_token_type_ids" in kwargs:
        kwargs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra, dtype=torch.int32)], 1)
    with torch.no_grad():
        out = vlm.model.model(**kwargs)  # the base model's last_hidden_state is after the final norm
    return out.last_hidden_state[0], inputs["input_ids"].shape[1]


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_hook_features_equal_a_plain_forward(load_tiny_vlm, colour_images, model_type):
    vlm = load_tiny_vlm(model_type)
    prompt = cobsat_prompt(colour_images("white", "blue"), ["white", "blue", "red"])
    tokens = vlm.generate([prompt], GenerationSettings(seed=3, temperature=0.6, top_p=0.9, max_new_tokens=12, min_new_tokens=12))
    assert tokens.features.shape == (1, 12, vlm.hidden_size) and tokens.lengths == [12]
    states, prompt_length = reforward_final_norm(vlm, prompt, tokens.token_ids[0])
    reference = states[prompt_length - 1: prompt_length - 1 + 12]  # the state that produced generated token i
    assert (tokens.features[0] - reference).abs().max() <= 1e-5


def test_fixed_seed_gives_the_same_text_and_features(tiny_vlm, colour_images):
    prompt = cobsat_prompt(colour_images("red", "green"), ["red", "green", "blue"])
    settings = GenerationSettings(seed=7, temperature=1.0, top_p=1.0, max_new_tokens=8, min_new_tokens=8)
    first, second = tiny_vlm.generate([prompt], settings), tiny_vlm.generate([prompt], settings)
    assert first.texts == second.texts and torch.equal(first.features, second.features)
    others = {tuple(tiny_vlm.generate([prompt], GenerationSettings(seed=s, temperature=1.0, top_p=1.0, max_new_tokens=8,
                                                                   min_new_tokens=8)).token_ids[0].tolist()) for s in range(4)}
    assert len(others) > 1, "different seeds should sample different tokens"


def test_generation_leaves_the_global_rng_alone(tiny_vlm, colour_images):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_vlm.generate([compose_prompt(colour_images("red"), [])], GenerationSettings(seed=1, max_new_tokens=3, min_new_tokens=3))
    assert torch.equal(torch.rand(3), expected)


def test_temperature_zero_is_greedy(tiny_vlm, colour_images):
    prompt = cobsat_prompt(colour_images("red", "green"), ["red", "green", "blue"])
    tokens = tiny_vlm.generate([prompt], GREEDY)
    inputs = tiny_vlm.prepare([prompt])
    ids = inputs["input_ids"]
    expected = []
    for _ in range(GREEDY.max_new_tokens):  # argmax of a full forward each step, placeholders suppressed
        kwargs = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids))
        if "mm_token_type_ids" in kwargs:
            kwargs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"],
                                                     torch.zeros(1, ids.shape[1] - inputs["input_ids"].shape[1], dtype=torch.int32)], 1)
        with torch.no_grad():
            logits = tiny_vlm.model(**kwargs).logits[0, -1]
        logits[tiny_vlm.placeholder_ids] = -float("inf")
        expected.append(int(logits.argmax()))
        ids = torch.cat([ids, torch.tensor([[expected[-1]]])], 1)
    assert tokens.token_ids[0].tolist() == expected


def test_batched_generation_equals_single_generations(tiny_vlm, colour_images):
    prompts = [
        cobsat_prompt(colour_images("red", "green"), ["red", "green", "blue"]),
        compose_prompt(colour_images("yellow"), ["a yellow star"]),
        cobsat_prompt(colour_images("white", "black", "purple"), ["car", "cup", "box", "apple"]),
    ]
    batch = tiny_vlm.generate(prompts, GREEDY)
    for row, prompt in enumerate(prompts):
        single = tiny_vlm.generate([prompt], GREEDY)
        assert batch.token_ids[row].tolist() == single.token_ids[0].tolist()
        assert batch.texts[row] == single.texts[0]
        assert torch.allclose(batch.features[row], single.features[0], atol=1e-4)


def test_rows_are_masked_at_their_first_eos(tiny_vlm, colour_images):
    """A head that always prefers EOS once min_new_tokens allows it: rows stop, later states are zeroed."""
    eos = tiny_vlm.eos_token_ids[0]
    original = tiny_vlm.model.lm_head
    eos_head = torch.nn.Linear(original.in_features, original.out_features, bias=True)
    with torch.no_grad():
        eos_head.weight.copy_(original.weight * 1e-3)
        eos_head.bias.zero_()
        eos_head.bias[eos] = 100.0
    tiny_vlm.model.lm_head = eos_head
    try:
        prompts = [compose_prompt(colour_images("red"), []), compose_prompt(colour_images("blue", "green"), [])]
        tokens = tiny_vlm.generate(prompts, GenerationSettings(temperature=0.0, max_new_tokens=6, min_new_tokens=2))
    finally:
        tiny_vlm.model.lm_head = original
    for row in range(2):
        n = tokens.lengths[row]
        assert n == 3 and tokens.token_ids[row, n - 1] == eos
        assert tokens.features[row, n:].abs().sum() == 0 and tokens.features[row, :n].abs().sum() > 0
        assert (tokens.token_ids[row, n:] == tiny_vlm.pad_token_id).all()


def test_lengths_stop_at_the_first_of_any_eos_id(tiny_vlm):
    eos, other_eos = tiny_vlm.eos_token_ids[:2]
    generated = torch.tensor([[5, 6, eos, 7, eos], [5, other_eos, 6, 6, 6], [5, 6, 7, 8, 9]])
    assert tiny_vlm._lengths(generated) == [3, 2, 5]


def test_on_token_reports_progress_and_can_stop_generation(tiny_vlm, colour_images):
    prompt = compose_prompt(colour_images("red"), [])
    seen = []
    tiny_vlm.generate([prompt], GREEDY, on_token=lambda done, total: seen.append((done, total)))
    assert seen == [(i, GREEDY.max_new_tokens) for i in range(1, GREEDY.max_new_tokens + 1)]

    class Cancelled(Exception):
        pass

    def cancel_after_three(done, total):
        if done == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        tiny_vlm.generate([prompt], GREEDY, on_token=cancel_after_three)
    assert tiny_vlm.generate([prompt], GREEDY).features.shape[1] == GREEDY.max_new_tokens  # hook was removed


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "I;16", "I", "P", "CMYK"])
def test_unusual_image_modes_are_accepted(tiny_vlm, mode):
    rgb = Image.new("RGB", (40, 56), (200, 30, 30))
    if mode == "I;16":
        image = Image.fromarray(np.full((56, 40), 40000, dtype=np.uint16))
    elif mode == "I":
        image = Image.fromarray(np.full((56, 40), 40000, dtype=np.int32))
    else:
        image = rgb.convert(mode)
    tokens = tiny_vlm.generate([compose_prompt([image], [])], GenerationSettings(temperature=0, max_new_tokens=2, min_new_tokens=2))
    assert tokens.features.shape[1] == 2


def test_sixteen_bit_images_keep_their_brightness():
    from thinkdiff_core.images import tensor_to_pil, to_rgb

    grey = to_rgb(Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)))
    assert grey.mode == "RGB" and abs(grey.getpixel((0, 0))[0] - 128) <= 1
    transparent = to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert transparent.getpixel((0, 0)) == (255, 255, 255)
    batch = tensor_to_pil(torch.rand(2, 8, 6, 4))
    assert len(batch) == 2 and batch[0].size == (6, 8) and batch[0].mode == "RGB"
    with pytest.raises(ValueError, match=r"\[batch, height, width, 1\|3\|4\]"):
        tensor_to_pil(torch.rand(1, 8, 6, 2))


def test_a_template_that_drops_images_is_caught(tiny_vlm, colour_images):
    broken = VisionLanguageModel(tiny_vlm.model, tiny_vlm.tokenizer, tiny_vlm.image_processor,
                                 "{% for m in messages %}{{ m['role'] }}{% endfor %}", "broken")
    with pytest.raises(ValueError, match="0 image placeholders but 2 images"):
        broken.prepare([cobsat_prompt(colour_images("red", "blue"), ["a", "b", "c"])])


def test_folder_without_config_json(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="has no config.json"):
        VisionLanguageModel.from_pretrained(tmp_path)


def test_unsupported_model_type(tmp_path, tiny_vlm_dirs):
    folder = tmp_path / "llama"
    shutil.copytree(tiny_vlm_dirs("qwen2_vl"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model_type="llava")))
    with pytest.raises(ValueError, match="'llava' model; supported VLMs are Qwen2-VL, Qwen2.5-VL, Qwen3-VL"):
        VisionLanguageModel.from_pretrained(folder)


def test_missing_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Hub id"):
        VisionLanguageModel.from_pretrained(tmp_path / "does" / "not" / "exist")


def test_hub_id_is_resolved_through_the_hub_cache(monkeypatch, tiny_vlm_dirs):
    """A Hub id goes to huggingface_hub (here answered from a folder the test wrote, as the cache would)."""
    import huggingface_hub

    asked = []

    def fake_snapshot_download(repo_id, allow_patterns=None):
        asked.append((repo_id, allow_patterns))
        return str(tiny_vlm_dirs("qwen2_vl"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    vlm = VisionLanguageModel.from_pretrained("Qwen/Qwen2-VL-7B-Instruct", dtype="fp32")
    assert asked[0][0] == "Qwen/Qwen2-VL-7B-Instruct" and "*.safetensors" in asked[0][1]
    assert vlm.model_id == "Qwen/Qwen2-VL-7B-Instruct"


def test_loading_settings(tiny_vlm_dirs):
    vlm = VisionLanguageModel.from_pretrained(tiny_vlm_dirs("qwen2_vl"), dtype="bf16", device="cpu")
    assert vlm.model.dtype == torch.bfloat16 and vlm.model.config._attn_implementation == "sdpa"
    assert vlm.model_id == "qwen2_vl" and vlm.hidden_size == 64
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("mps")) == torch.float16
    with pytest.raises(ValueError, match="Unknown dtype 'float8'"):
        resolve_dtype("float8", torch.device("cpu"))


def test_settings_are_validated():
    with pytest.raises(ValueError, match="min_new_tokens=20, max_new_tokens=10"):
        GenerationSettings(max_new_tokens=10, min_new_tokens=20)
    with pytest.raises(ValueError, match="0 < top_p <= 1"):
        GenerationSettings(top_p=0)


def test_text_only_prompt_works(tiny_vlm):
    tokens = tiny_vlm.generate([Prompt(["Describe a red circle."])], GenerationSettings(temperature=0, max_new_tokens=3, min_new_tokens=3))
    assert tokens.features.shape == (1, 3, 64)
