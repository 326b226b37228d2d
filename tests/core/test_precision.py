"""VLM weight precisions on the tiny Qwen-VL models: fp8 and int8 (torchao) and nf4 (bitsandbytes) loads that
generate and capture, features near bf16's on the same tokens, an offload/reload round trip, byte counts, `auto`,
and the install message when a quantization library is missing."""

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from thinkdiff_core.precision import (
    Precision, WeightCensus, auto_precision, census, resolve_precision, weight_bytes,
)
from thinkdiff_core.prompts import cobsat_prompt
from thinkdiff_core.testing.forced import forced_features
from thinkdiff_core.vlm import GenerationSettings, VisionLanguageModel

GREEDY = GenerationSettings(seed=0, temperature=0.0, max_new_tokens=8, min_new_tokens=8)
BF16 = Precision("bf16", torch.bfloat16)


@pytest.fixture(scope="module")
def load(tiny_vlm_dirs):
    """The tiny Qwen-VL models in a precision (computed in bf16, as on a GPU), loaded once per module."""
    models = {}

    def get(weights: str, model_type: str = "qwen2_vl") -> VisionLanguageModel:
        key = (weights, model_type)
        if key not in models:
            models[key] = VisionLanguageModel.from_pretrained(
                tiny_vlm_dirs(model_type), dtype=Precision(weights, torch.bfloat16), device="cpu")
        return models[key]

    return get


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("weights", ["fp8", "int8", "nf4"])
def test_quantized_load_generates_and_captures(load, colour_images, weights, model_type):
    vlm = load(weights, model_type)
    assert vlm.precision == Precision(weights, torch.bfloat16)
    tokens = vlm.generate([cobsat_prompt(colour_images("red", "blue"), ["red", "blue", "green"])], GREEDY)
    assert tokens.features.shape == (1, 8, vlm.hidden_size) and tokens.features.dtype == torch.bfloat16
    assert torch.isfinite(tokens.features).all() and tokens.features.abs().sum() > 0
    # the hook saw exactly the states a forward over the generated ids gives
    prompt = cobsat_prompt(colour_images("red", "blue"), ["red", "blue", "green"])
    assert cosine(tokens.features[0], forced_features(vlm, prompt, tokens.token_ids[0])) > 0.9999


STORED = {"fp8": ("Float8Tensor", torch.float8_e4m3fn), "int8": ("Int8Tensor", torch.int8),
          "nf4": ("Params4bit", torch.uint8)}


@pytest.mark.parametrize("weights", ["fp8", "int8", "nf4"])
def test_the_language_models_linear_layers_and_its_embedding_are_quantized(load, weights):
    model = load(weights).model
    layer = model.model.language_model.layers[0]
    stored, table = layer.mlp.up_proj.weight, model.model.language_model.embed_tokens.weight
    kind, dtype = STORED[weights]
    assert type(stored).__name__ == kind and (stored.dtype if weights == "nf4" else stored.qdata.dtype) == dtype
    assert type(table).__name__ == "IntxUnpackedToInt8Tensor" and table.qdata.dtype == torch.int8
    assert type(model.lm_head.weight).__name__ == kind
    kept = [model.model.visual.blocks[0].attn.qkv.weight, layer.input_layernorm.weight,
            model.model.language_model.norm.weight]
    assert all(type(p) is torch.nn.Parameter and p.dtype == torch.bfloat16 for p in kept)


@pytest.mark.parametrize("weights", ["fp8", "int8", "nf4"])
def test_the_int8_embedding_looks_up_the_rows_of_the_plain_one(load, weights):
    token_ids = torch.tensor([[5, 17, 300, 447]])  # not 0: the padding row is all zeros
    plain = load("bf16").model.get_input_embeddings()(token_ids).float()
    rows = load(weights).model.get_input_embeddings()(token_ids)
    assert rows.dtype == torch.bfloat16 and rows.shape == plain.shape
    assert torch.nn.functional.cosine_similarity(rows.float(), plain, dim=-1).min() > 0.9999


@pytest.mark.parametrize(("weights", "floor"), [("fp8", 0.999), ("int8", 0.9999), ("nf4", 0.99)])
def test_features_stay_close_to_bf16_on_the_same_tokens(load, colour_images, weights, floor):
    prompt = cobsat_prompt(colour_images("red", "green"), ["red", "green", "blue"])
    reference = load("bf16")
    ids = reference.generate([prompt], GREEDY).token_ids[0]
    similarity = cosine(forced_features(load(weights), prompt, ids), forced_features(reference, prompt, ids))
    assert floor <= similarity < 1.0  # close, and genuinely quantized (not the bf16 weights again)


@pytest.mark.parametrize("weights", ["bf16", "fp8", "int8", "nf4"])
def test_features_survive_an_offload_and_reload_round_trip(load, colour_images, weights):
    """`Module.to` is what ComfyUI's ModelPatcher (and the pipeline's offload) call on the model. On a machine
    without an accelerator both ends are the CPU, which still runs each library's `.to` (bitsandbytes rebuilds
    its weights and moves their quantization state); bench/vlm_precision.py --gpu does the CPU<->CUDA trip."""
    vlm = load(weights)
    prompt = cobsat_prompt(colour_images("red", "blue"), ["red", "blue", "green"])
    load_device = "cuda" if torch.cuda.is_available() else "cpu"
    before = vlm.model.to(load_device) and vlm.generate([prompt], GREEDY)
    held = weight_bytes(vlm.model)
    vlm.model.to("cpu").to(load_device)  # offload, reload
    after = vlm.generate([prompt], GREEDY)
    vlm.model.to("cpu")
    assert after.texts == before.texts and torch.equal(after.features, before.features)
    assert weight_bytes(vlm.model) == held  # still quantized: nothing was dequantized on the way


def test_weight_bytes_shrink_and_the_census_predicts_them(load):
    held = {weights: weight_bytes(load(weights).model) for weights in ("bf16", "fp8", "int8", "nf4")}
    assert held["nf4"] < held["fp8"] < held["int8"] < held["bf16"]  # int8 adds a zero point per row to fp8's bytes
    counts = census(load("bf16").model)
    assert census(load("fp8").model) == census(load("int8").model) == census(load("nf4").model) == counts
    for weights, actual in held.items():
        predicted = counts.bytes(Precision(weights, torch.bfloat16))
        assert abs(predicted - actual) <= 0.002 * actual, (weights, predicted, actual)


def test_precision_names_resolve_per_device():
    cpu = torch.device("cpu")
    assert resolve_precision("bf16", cpu) == BF16
    assert resolve_precision(torch.float16, cpu) == Precision("fp16", torch.float16)
    assert resolve_precision("fp8", cpu) == Precision("fp8", torch.float32)  # the CPU computes in fp32
    assert resolve_precision("auto", cpu) == Precision("fp32", torch.float32)
    assert str(Precision("nf4", torch.bfloat16)) == "nf4 (computed in bfloat16)"
    with pytest.raises(ValueError, match="Unknown precision 'int3'.*auto, bf16, fp16, fp32, fp8, int8, nf4"):
        resolve_precision("int3", cpu)
    with pytest.raises(ValueError, match="compute in torch.bfloat16"):
        Precision("bf16", torch.float32)


def test_auto_picks_the_half_dtype_when_it_fits_else_fp8(caplog):
    seven_b = WeightCensus(quantizable=7_070_285_824, kept=676_092_416, rows=1_542_656, tensors=197,
                           embedding=544_997_376, embedding_rows=152_064)  # Qwen2-VL-7B's shapes
    working = 2 * 2**30
    with caplog.at_level(logging.INFO, logger="thinkdiff_core.precision"):
        assert auto_precision(torch.bfloat16, seven_b, working, 24 * 2**30) == BF16
        assert auto_precision(torch.bfloat16, seven_b, working, 16 * 2**30) == Precision("fp8", torch.bfloat16)
    assert "chose bf16: 15.4 GiB weights + 2.0 GiB working memory fit the card's 24.0 GiB" in caplog.text
    assert "chose fp8 (computed in bfloat16): 15.4 GiB weights + 2.0 GiB working memory exceed the card's 16.0 GiB" \
        in caplog.text


BLOCK_IMPORT = """
import sys
for name in {names!r}:
    sys.modules[name] = None  # as if not installed: `import` raises ImportError, importlib.util.find_spec gives None
"""


@pytest.mark.parametrize(("weights", "blocked", "what", "command"), [
    ("nf4", ["bitsandbytes"], "package bitsandbytes, which is", '"bitsandbytes>=0.45"'),
    ("nf4", ["bitsandbytes", "torchao"], "packages bitsandbytes and torchao, which are",
     '"bitsandbytes>=0.45" "torchao>=0.15"'),
    ("fp8", ["torchao"], "package torchao, which is", '"torchao>=0.15"'),
    ("int8", ["torchao"], "package torchao, which is", '"torchao>=0.15"'),
])
def test_a_missing_quantization_library_names_the_pip_command(tiny_vlm_dirs, weights, blocked, what, command):
    """A fresh Python in which the libraries cannot be imported, loading a real tiny folder."""
    script = BLOCK_IMPORT.format(names=blocked) + textwrap.dedent(f"""
        from thinkdiff_core.vlm import VisionLanguageModel
        try:
            VisionLanguageModel.from_pretrained({str(tiny_vlm_dirs())!r}, dtype={weights!r}, device="cpu")
        except ImportError as error:
            print("MESSAGE:", error)
        else:
            print("LOADED")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parents[2], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout.split("MESSAGE: ", 1)[-1]
    assert message.startswith(f"The {weights} precision needs the optional {what} missing or too old here"), message
    assert f"pip install -U {command} (then restart), or choose another precision" in message


def test_a_too_old_quantization_library_names_the_upgrade(tmp_path):
    """Metadata of an older torchao ahead of the real one on the path (what `importlib.metadata` reads first), as
    after an old install: torchao imports, and transformers 5 would refuse it with a message naming no version."""
    metadata = tmp_path / "torchao-0.14.1.dist-info" / "METADATA"
    metadata.parent.mkdir()
    metadata.write_text("Metadata-Version: 2.1\nName: torchao\nVersion: 0.14.1\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from thinkdiff_core.precision import Precision, MissingDependency
        try:
            Precision("int8", __import__("torch").bfloat16).quantization_config()
        except MissingDependency as error:
            print("MESSAGE:", error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("MESSAGE: ", 1)[-1].startswith(
        "The int8 precision needs the optional package torchao, which is missing or too old here (torchao 0.14.1 is "
        'older than 0.15). Install into the Python that runs ThinkDiff: pip install -U "torchao>=0.15" (then restart)')


@pytest.mark.skipif(not hasattr(__import__("transformers").utils.logging, "set_tqdm_hook"),
                    reason="transformers < 5 has no progress-bar hook (the console bar is all)")
@pytest.mark.parametrize("weights", ["bf16", "nf4"])
def test_loading_reports_progress_to_the_end(tiny_vlm_dirs, weights):
    seen = []
    VisionLanguageModel.from_pretrained(tiny_vlm_dirs(), dtype=Precision(weights, torch.bfloat16), device="cpu",
                                        on_progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 10 and seen[-1][0] == seen[-1][1]  # one step per weight, to the last
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


@pytest.mark.parametrize("weights", ["fp8", "int8", "nf4"])
def test_quantizing_on_a_device_then_resting_on_the_cpu(tiny_vlm_dirs, load, colour_images, weights):
    """`quantize_on` places the weights while loading (a GPU in ComfyUI; the only device here is the CPU), and the
    model then rests on the CPU with the same quantized weights and features as a plain load."""
    quantize_on = "cuda" if torch.cuda.is_available() else "cpu"
    vlm = VisionLanguageModel.from_pretrained(tiny_vlm_dirs(), dtype=Precision(weights, torch.bfloat16),
                                              quantize_on=quantize_on)
    assert vlm.device.type == "cpu"
    prompt = cobsat_prompt(colour_images("red"), ["red", "blue"])
    assert torch.equal(vlm.generate([prompt], GREEDY).features, load(weights).generate([prompt], GREEDY).features)
    # compared after both ran on the CPU (bitsandbytes repacks 4-bit weights for its CPU kernels on first use)
    assert weight_bytes(vlm.model) == weight_bytes(load(weights).model)
