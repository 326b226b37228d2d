"""Aligner math, the official .pth layout, our safetensors format, and what bad files get."""

import json
import math
import pickle
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from thinkdiff_core.aligner import Aligner
from thinkdiff_core.checkpoint import AlignerInfo, LoadedAligner, convert_official, load_aligner, save_aligner
from thinkdiff_core.convert import main as convert_main
from thinkdiff_core.tokens import CLIP_RECIPE, LVLM_RECIPE, ThinkDiffTokens

D_IN, D_OUT = 24, 32


def official_state(d_in=D_IN, d_out=D_OUT, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"0.weight": (d_out, d_in), "0.bias": (d_out,), "2.weight": (d_out, d_out), "2.bias": (d_out,),
              "3.weight": (d_out,)}
    return {f"mm_projector.{k}": torch.randn(s, generator=generator) * 0.2 for k, s in shapes.items()}


def write_official(path, state=None, config=None):
    """The released layout: a torch.save dict holding only the trainable tensors plus training state."""
    state = state if state is not None else official_state()
    torch.save({
        "model": state,
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "config": config if config is not None else {"model": {"arch": "mllama-vllm-t5-embed-decoder-2",
                                                                "mllama_pretrained_model_name_or_path": "Qwen/Qwen2-VL-7B-Instruct"}},
        "scaler": None,
        "epoch": 39,
    }, path)
    return path


def hand_aligner(state, x):
    """Linear -> exact GELU -> Linear -> T5 RMSNorm (eps 1e-6), written out by hand."""
    p = {k.removeprefix("mm_projector."): v for k, v in state.items()}
    h = x @ p["0.weight"].T + p["0.bias"]
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    h = h @ p["2.weight"].T + p["2.bias"]
    return p["3.weight"] * h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


def lvlm_tokens(features, source="Qwen/Qwen2-VL-7B-Instruct", **kwargs):
    return ThinkDiffTokens(features, source, LVLM_RECIPE, **kwargs)


def test_official_pth_loads_and_matches_hand_computation(tmp_path):
    state = official_state()
    loaded = load_aligner(write_official(tmp_path / "thinkdiff_lvlm.pth", state))
    assert loaded.info.variant == "lvlm" and loaded.info.source_model_id == "Qwen/Qwen2-VL-7B-Instruct"
    x = torch.randn(2, 5, D_IN)
    assert torch.allclose(loaded(lvlm_tokens(x)), hand_aligner(state, x), atol=1e-6)


def test_official_clip_checkpoint_is_recognised_by_its_config(tmp_path):
    config = {"model": {"arch": "blip-vision-t5-decoder", "blip2_pretrained_model_name_or_path": "Salesforce/blip2-flan-t5-xxl"}}
    loaded = load_aligner(write_official(tmp_path / "clip.pth", config=config))
    assert loaded.info.token_recipe == CLIP_RECIPE and loaded.info.source_model_id == "Salesforce/blip2-flan-t5-xxl"


def test_conversion_to_safetensors_and_back_is_lossless(tmp_path):
    state = {k: v.to(torch.bfloat16) for k, v in official_state().items()}
    source = write_official(tmp_path / "thinkdiff_lvlm.pth", state)
    converted = convert_official(source, tmp_path / "thinkdiff_lvlm.safetensors")
    again = load_aligner(converted)
    for key, tensor in state.items():
        restored = again.module.state_dict()[key.removeprefix("mm_projector.")]
        assert restored.dtype == torch.bfloat16 and torch.equal(restored, tensor)
    assert again.info.provenance["converted_from"] == "thinkdiff_lvlm.pth"
    assert again.info.source_model_id == "Qwen/Qwen2-VL-7B-Instruct"
    resaved = save_aligner(tmp_path / "again.safetensors", again)
    assert all(torch.equal(a, b) for a, b in zip(load_aligner(resaved).module.state_dict().values(),
                                                  again.module.state_dict().values()))


def test_never_overwrites_unless_asked(tmp_path):
    source = write_official(tmp_path / "a.pth")
    target = tmp_path / "user.safetensors"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_official(source, target)
    assert target.read_bytes() == b"precious"
    assert convert_main(["aligner", str(source), str(target)]) == 2
    assert target.read_bytes() == b"precious"
    assert convert_main(["aligner", str(source), str(target), "--overwrite"]) == 0
    assert load_aligner(target).module.input_size == D_IN


def test_aligner_input_size_mismatch_names_both_sizes(tmp_path):
    loaded = load_aligner(write_official(tmp_path / "a.pth"))
    with pytest.raises(ValueError, match=r"hidden size 64 .*expects 24"):
        loaded(lvlm_tokens(torch.randn(1, 3, 64), source="tiny-qwen"))


def test_recipe_mismatch_is_refused(tmp_path):
    loaded = load_aligner(write_official(tmp_path / "a.pth"))
    with pytest.raises(ValueError, match="ThinkDiff-CLIP path .* ThinkDiff-LVLM aligner"):
        loaded(ThinkDiffTokens(torch.randn(1, 65, D_IN), "blip2", CLIP_RECIPE))


def test_padded_positions_stay_zero(tmp_path):
    loaded = load_aligner(write_official(tmp_path / "a.pth"))
    aligned = loaded(lvlm_tokens(torch.randn(2, 4, D_IN), lengths=[4, 2]))
    assert aligned[1, 2:].abs().sum() == 0 and aligned[1, :2].abs().sum() > 0 and aligned[0].abs().min() > 0


@pytest.mark.parametrize("key,shape", [("mm_projector.2.weight", (D_OUT, D_OUT + 1)), ("mm_projector.3.weight", (D_OUT - 1,))])
def test_wrong_shape_in_official_file(tmp_path, key, shape):
    state = official_state()
    state[key] = torch.zeros(shape)
    with pytest.raises(ValueError, match=rf"tensor {key} has shape {tuple(shape)}".replace("(", r"\(").replace(")", r"\)")):
        load_aligner(write_official(tmp_path / "bad.pth", state))


def test_missing_tensor_and_wrong_shape_in_safetensors(tmp_path):
    state = official_state()
    del state["mm_projector.3.weight"]
    save_file(state, tmp_path / "missing.safetensors", metadata={"format": "thinkdiff-aligner"})
    with pytest.raises(ValueError, match=r"missing tensors \['mm_projector.3.weight'\]"):
        load_aligner(tmp_path / "missing.safetensors")
    state = official_state()
    state["mm_projector.0.bias"] = torch.zeros(D_OUT + 2)
    save_file(state, tmp_path / "shape.safetensors", metadata={"format": "thinkdiff-aligner"})
    with pytest.raises(ValueError, match=r"mm_projector.0.bias has shape \(34,\), expected \(32,\)"):
        load_aligner(tmp_path / "shape.safetensors")


def test_metadata_that_contradicts_tensors_is_refused(tmp_path):
    path = save_aligner(tmp_path / "a.safetensors", LoadedAligner(Aligner(D_IN, D_OUT), AlignerInfo("x", LVLM_RECIPE)))
    tensors = load_file(path)
    save_file(tensors, tmp_path / "lie.safetensors", metadata={"format": "thinkdiff-aligner", "source_hidden_size": "3584",
                                                               "token_recipe": LVLM_RECIPE})
    with pytest.raises(ValueError, match="source_hidden_size=3584 but the tensors have 24"):
        load_aligner(tmp_path / "lie.safetensors")


def test_truncated_files_get_an_actionable_message(tmp_path):
    official = write_official(tmp_path / "a.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(official[: len(official) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_aligner(tmp_path / "cut.pth")
    ours = save_aligner(tmp_path / "a.safetensors", load_aligner(tmp_path / "a.pth")).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(ours[: len(ours) - 100])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_aligner(tmp_path / "cut.safetensors")


class RunsCode:
    """A pickle payload that would create a file when unpickled by a trusting loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": official_state(), "payload": RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="Refusing to load evil.pth.*Unsupported global.*Nothing in it was executed"):
        load_aligner(tmp_path / "evil.pth")
    assert not marker.exists()
    with open(tmp_path / "legacy_evil.pth", "wb") as handle:  # a bare pickle, not a torch zip archive
        pickle.dump(RunsCode(marker), handle)
    with pytest.raises(ValueError, match="Refusing to load legacy_evil.pth.*Nothing in it was executed"):
        load_aligner(tmp_path / "legacy_evil.pth")
    assert not marker.exists()


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "a.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown aligner file type '.ckpt'"):
        load_aligner(tmp_path / "a.ckpt")
    with pytest.raises(FileNotFoundError, match="models/thinkdiff"):
        load_aligner(tmp_path / "nope.safetensors")


def test_foreign_safetensors_is_not_taken_for_an_aligner(tmp_path):
    save_file(official_state(), tmp_path / "lora.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a ThinkDiff aligner"):
        load_aligner(tmp_path / "lora.safetensors")


def test_saved_metadata_describes_the_aligner(tmp_path):
    info = AlignerInfo("Qwen/Qwen2.5-VL-7B-Instruct", LVLM_RECIPE, {"steps": 10})
    path = save_aligner(tmp_path / "a.safetensors", LoadedAligner(Aligner(D_IN, D_OUT), info))
    header_size = struct.unpack("<Q", path.read_bytes()[:8])[0]
    metadata = json.loads(path.read_bytes()[8: 8 + header_size])["__metadata__"]
    assert metadata["variant"] == "lvlm" and metadata["source_hidden_size"] == str(D_IN)
    assert metadata["output_size"] == str(D_OUT) and json.loads(metadata["provenance"]) == {"steps": 10}
    assert load_aligner(path).info == info


def test_norm_initialised_from_a_t5_encoder(tmp_path):
    from transformers import T5ForConditionalGeneration

    from thinkdiff_core.testing.tiny import write_tiny_t5

    t5 = T5ForConditionalGeneration.from_pretrained(write_tiny_t5(tmp_path / "t5"))
    with torch.no_grad():
        t5.encoder.final_layer_norm.weight.uniform_(0.5, 2.0)
    aligner = Aligner(D_IN, t5.config.d_model)
    aligner.init_norm_from_t5(t5.encoder.final_layer_norm.weight)
    assert torch.equal(aligner[3].weight, t5.encoder.final_layer_norm.weight)
    with pytest.raises(ValueError, match="output_size=64"):
        Aligner(D_IN, 32).init_norm_from_t5(t5.encoder.final_layer_norm.weight)


def test_norm_computes_in_float32_and_returns_input_dtype():
    aligner = Aligner(D_IN, D_OUT).to(torch.bfloat16)
    x = torch.randn(3, D_IN, dtype=torch.bfloat16)
    out = aligner(x)
    assert out.dtype == torch.bfloat16
    reference = hand_aligner({f"mm_projector.{k}": v.float() for k, v in aligner.state_dict().items()}, x.float())
    assert torch.allclose(out.float(), reference, atol=5e-2)
