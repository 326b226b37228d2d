"""What the VLM's weight precisions cost and keep: bytes, features and decode speed of fp8, int8 and nf4 against bf16.

A random-weight model with Qwen2-VL-7B's real widths (hidden 3584, MLP 18944, vocab 152064, vision 1280)
is written to a folder once and loaded through `VisionLanguageModel.from_pretrained` in each precision
(computed in bf16), so the measured path is the library's. On the CPU (default) it is cut to 2 decoder
layers and 2 vision blocks; `--full-size` keeps all 28 and 32 (a GPU's job). Rows:

- `*_weight_ratio`: weight bytes relative to bf16 for the whole 28-layer model: the bytes per Linear
  and per embedding weight measured on the loaded model, applied to the full model's exact weight census
  (the 2-layer cut's own ratio, dominated by its embeddings and head, is `*_weight_ratio_as_loaded`).
- `*_feature_cosine`: captured final-norm features against bf16's on the same tokens (bf16's greedy
  answer forced through each model); `*_aligned_cosine`: the same after a real-size random aligner;
  `*_one_linear_cosine`: one quantized Linear's output on a fixed input (the format's own error: e4m3
  keeps 3 mantissa bits, ~3.6% RMS per weight; int8's even steps about a tenth of that on bell-shaped
  weights); `*_compounded_cosine`: what that error predicts for the features when each of the 7 Linear
  layers per decoder layer adds its own (random layers add them all; trained ones far less).
- `*_decode_ratio`: decode time per token relative to bf16 (median gap between consecutive tokens).

`--gpu` adds per precision: peak GPU memory, tokens/s over `--tokens` new tokens, the share of the
memory-bandwidth bound it reaches (the device's measured copy bandwidth / weight bytes read per token),
the working-memory estimate against the measured peak, and an offload/reload round trip.

    python bench/vlm_precision.py                        # CPU, 2 layers
    python bench/vlm_precision.py --gpu --full-size      # a GPU: 28 layers, peak memory, tokens/s
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinkdiff_core.aligner import Aligner  # noqa: E402
from thinkdiff_core.memory import request_memory  # noqa: E402
from thinkdiff_core.precision import QUANTIZED, Precision, census, tensor_bytes, weight_bytes  # noqa: E402
from thinkdiff_core.prompts import cobsat_prompt  # noqa: E402
from thinkdiff_core.testing.forced import forced_features  # noqa: E402
from thinkdiff_core.testing.tiny import write_tiny_qwen_vl  # noqa: E402
from thinkdiff_core.vlm import GenerationSettings, VisionLanguageModel  # noqa: E402

PRECISIONS = ("bf16", *QUANTIZED)
LINEARS_PER_LAYER = 7  # q, k, v, o; gate, up, down


def qwen2_vl_7b_config(tokenizer_ids: dict[str, int], layers: int, vision_depth: int):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=layers,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                         rope_theta=1000000.0, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                         tie_word_embeddings=False),
        vision_config=dict(depth=vision_depth, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=tokenizer_ids["<|image_pad|>"], video_token_id=tokenizer_ids["<|video_pad|>"],
        vision_start_token_id=tokenizer_ids["<|vision_start|>"], vision_end_token_id=tokenizer_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def write_random_qwen2_vl_7b(folder: Path, layers: int, vision_depth: int, device: str = "cpu") -> Path:
    """A loadable folder: the tiny tokenizer and chat template, Qwen's own image-size bounds, and random bf16
    weights at Qwen2-VL-7B's widths (std 0.02, as its initializer)."""
    import json

    from transformers import Qwen2VLForConditionalGeneration

    write_tiny_qwen_vl(folder)
    tiny = VisionLanguageModel.from_pretrained(folder, dtype="fp32", device="cpu")
    ids = {t: tiny.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                                 "<|vision_end|>")}
    torch.manual_seed(0)
    with torch.device(device):  # a GPU fills 8 B random weights in seconds
        model = Qwen2VLForConditionalGeneration._from_config(qwen2_vl_7b_config(ids, layers, vision_depth),
                                                             dtype=torch.bfloat16)
    model.generation_config = tiny.model.generation_config
    for name in [p.name for p in folder.glob("model*.safetensors*")]:
        (folder / name).unlink()
    model.save_pretrained(folder)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    processor.update(min_pixels=56 * 56, max_pixels=28 * 28 * 1280, size={"shortest_edge": 56 * 56,
                                                                            "longest_edge": 28 * 28 * 1280})
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return folder


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_seconds_per_token(vlm: VisionLanguageModel, prompt, tokens: int, device: torch.device,
                             repeats: int) -> float:
    """Median time between consecutive generated tokens (the per-token hook's timestamps): decoding alone,
    without the prefill and the vision tower, over `repeats` generations."""
    settings = GenerationSettings(temperature=0.0, max_new_tokens=tokens, min_new_tokens=tokens)
    gaps: list[float] = []
    for _ in range(repeats):
        stamps: list[float] = []

        def stamp(done: int, total: int) -> None:
            synchronize(device)
            stamps.append(time.perf_counter())

        vlm.generate([prompt], settings, on_token=stamp)
        gaps += [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps)


def copy_bandwidth(device: torch.device, size: int = 2**30) -> float:
    """Bytes per second a device-to-device copy moves (read + write), the bound a decode step can approach."""
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(5):
        target.copy_(source)
    synchronize(device)
    return 2 * size * 5 / (time.perf_counter() - start)


def decode_weight_bytes(vlm: VisionLanguageModel) -> int:
    """The weight bytes one decode step reads: every decoder layer, the final norm and the head (not the vision
    tower, not the embedding table, of which it reads one row)."""
    language = vlm.model.model.language_model
    return weight_bytes(language.layers) + weight_bytes(language.norm) + weight_bytes(vlm.model.lm_head)


def bytes_per_quantizable_weight(vlm: VisionLanguageModel) -> float:
    """Measured storage of the quantized Linear weights (scales and quantization state included) per weight."""
    stored, count = 0, 0
    for name, module in vlm.model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.startswith("model.visual"):
            stored += tensor_bytes(module.weight)
            count += module.in_features * module.out_features
    return stored / count


def bytes_per_embedding_weight(vlm: VisionLanguageModel) -> float:
    """Measured storage of the input embedding table per weight (int8 with its scales when quantized)."""
    embedding = vlm.model.get_input_embeddings()
    return tensor_bytes(embedding.weight) / (embedding.num_embeddings * embedding.embedding_dim)


def full_size_census():
    from transformers import Qwen2VLForConditionalGeneration

    ids = {"<|image_pad|>": 151655, "<|video_pad|>": 151656, "<|vision_start|>": 151652, "<|vision_end|>": 151653}
    with torch.device("meta"):
        return census(Qwen2VLForConditionalGeneration._from_config(qwen2_vl_7b_config(ids, 28, 32)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="peak memory, tokens/s and the bandwidth bound (CUDA)")
    parser.add_argument("--full-size", action="store_true", help="all 28 decoder layers and 32 vision blocks")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default 2, full size 28)")
    parser.add_argument("--device", default=None, help="override the device (e.g. --gpu --device cpu as a smoke run)")
    parser.add_argument("--tokens", type=int, default=None,
                        help="tokens forced for the feature comparison and generated per decode timing "
                             "(default 16 on the CPU, 128 with --gpu)")
    parser.add_argument("--decode-tokens", type=int, default=None,
                        help="tokens per decode timing (default --tokens; 4 on the CPU, where fp8 decodes slowly)")
    parser.add_argument("--repeats", type=int, default=1, help="generations per decode timing")
    parser.add_argument("--image-size", type=int, default=448)
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if args.gpu else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(1)  # steadier ratios on a shared machine
    layers = args.layers or (28 if args.full_size else 2)
    vision_depth = 32 if args.full_size else min(layers, 32)
    tokens = args.tokens or (128 if args.gpu else 16)
    decode_tokens = args.decode_tokens or (tokens if device.type == "cuda" else 4)

    with tempfile.TemporaryDirectory(prefix="thinkdiff-precision-") as workdir:
        started = time.perf_counter()
        folder = write_random_qwen2_vl_7b(Path(workdir) / "random-qwen2-vl-7b", layers, vision_depth, device.type)
        print(f"wrote the random model ({layers} layers, {vision_depth} vision blocks) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        images = [Image.new("RGB", (args.image_size, args.image_size), colour) for colour in ("white", "blue")]
        prompt = cobsat_prompt(images, ["white", "blue", "red"])
        torch.manual_seed(1)
        aligner = Aligner(3584, 4096).eval()
        probe_input = torch.randn(64, 3584).to(torch.bfloat16)
        rows: dict[str, str] = {}
        reference = reference_aligned = None
        token_ids = None
        for weights in PRECISIONS:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            vlm = VisionLanguageModel.from_pretrained(folder, dtype=Precision(weights, torch.bfloat16))
            vlm.model.to(device)
            load_s = time.perf_counter() - started
            if token_ids is None:
                settings = GenerationSettings(temperature=0.0, max_new_tokens=tokens, min_new_tokens=tokens)
                answer = vlm.generate([prompt], settings)
                token_ids = answer.token_ids[0]
            features = forced_features(vlm, prompt, token_ids)
            with torch.no_grad():  # one Linear on a fixed input: the storage format's own error, before compounding
                linear_out = vlm.model.model.language_model.layers[0].mlp.up_proj(probe_input.to(device)).float().cpu()
            with torch.no_grad():
                aligned = aligner(features)
            if reference is None:
                reference, reference_aligned, reference_linear = features, aligned, linear_out
                rows["bf16_hook_vs_forced_cosine"] = f"{cosine(answer.features[0], features):.6f}"
            else:
                rows[f"{weights}_feature_cosine"] = f"{cosine(features, reference):.6f}"
                rows[f"{weights}_aligned_cosine"] = f"{cosine(aligned, reference_aligned):.6f}"
                one_linear = cosine(linear_out, reference_linear)
                rows[f"{weights}_one_linear_cosine"] = f"{one_linear:.6f}"
                rows[f"{weights}_compounded_cosine"] = f"{1 - LINEARS_PER_LAYER * layers * (1 - one_linear):.6f}"
            per_token = decode_seconds_per_token(vlm, prompt, decode_tokens, device, args.repeats)
            rows[f"{weights}_decode_s_per_token"] = f"{per_token:.4f}"
            rows[f"{weights}_weight_bytes_as_loaded"] = str(weight_bytes(vlm.model))
            rows[f"{weights}_bytes_per_linear_weight"] = f"{bytes_per_quantizable_weight(vlm):.4f}"
            rows[f"{weights}_bytes_per_embedding_weight"] = f"{bytes_per_embedding_weight(vlm):.4f}"
            rows[f"{weights}_load_s"] = f"{load_s:.1f}"
            if args.gpu:
                rows[f"{weights}_tokens_per_s"] = f"{1 / per_token:.1f}"
                decode_bytes = decode_weight_bytes(vlm)
                bandwidth = copy_bandwidth(device)
                rows[f"{weights}_bandwidth_bound_share"] = f"{(decode_bytes / per_token) / bandwidth:.3f}"
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(device)
                    rows[f"{weights}_peak_gib"] = f"{peak / 2**30:.2f}"
                    estimate = request_memory(vlm, [prompt], tokens).total
                    rows[f"{weights}_working_estimate_over_measured"] = \
                        f"{estimate / max(1, peak - weight_bytes(vlm.model)):.2f}"
                before = forced_features(vlm, prompt, token_ids)
                vlm.model.to("cpu").to(device)  # what ComfyUI's offload and reload do
                rows[f"{weights}_roundtrip_max_abs_diff"] = f"{(forced_features(vlm, prompt, token_ids) - before).abs().max():.3g}"
            print(f"{weights}: loaded in {load_s:.0f} s, {per_token:.3f} s/token", flush=True)
            del vlm
        full = full_size_census()
        bf16_full = full.bytes(Precision("bf16", torch.bfloat16))
        bf16_loaded = int(rows["bf16_weight_bytes_as_loaded"])
        if args.gpu:
            rows["device_copy_bandwidth_gb_s"] = f"{copy_bandwidth(device) / 1e9:.0f}"
        for weights in QUANTIZED:
            full_bytes = (full.kept * 2 + full.quantizable * float(rows[f"{weights}_bytes_per_linear_weight"])
                          + full.embedding * float(rows[f"{weights}_bytes_per_embedding_weight"]))
            rows[f"{weights}_weight_ratio_as_loaded"] = f"{int(rows[f'{weights}_weight_bytes_as_loaded']) / bf16_loaded:.3f}"
            rows[f"{weights}_full_size_gib"] = f"{full_bytes / 2**30:.2f}"
            rows[f"{weights}_weight_ratio"] = f"{full_bytes / bf16_full:.3f}"
        rows["bf16_full_size_gib"] = f"{bf16_full / 2**30:.2f}"
        for weights in QUANTIZED:
            rows[f"{weights}_decode_ratio"] = \
                f"{float(rows[f'{weights}_decode_s_per_token']) / float(rows['bf16_decode_s_per_token']):.2f}"

    print(f"device: {device} (random Qwen2-VL-7B widths, {layers} decoder layers, {vision_depth} vision blocks, "
          f"{tokens} tokens forced)")
    last = ["int8_weight_ratio", "int8_feature_cosine", "int8_aligned_cosine", "int8_decode_ratio",  # then the issue's
            "fp8_weight_ratio", "nf4_weight_ratio", "fp8_feature_cosine", "nf4_feature_cosine", "fp8_aligned_cosine",
            "nf4_aligned_cosine", "fp8_decode_ratio", "nf4_decode_ratio"]
    for name, value in rows.items():
        if name not in last:
            print(f"{name}: {value}")
    for name in last:
        print(f"{name}: {rows[name]}")


if __name__ == "__main__":
    main()
