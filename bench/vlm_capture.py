"""What feature capture costs: `VisionLanguageModel.generate` (final-norm hook) vs the same generate without it.

Both sides prepare the same inputs and decode the same greedy tokens; the only difference is the
hook writing one `[B, D]` slice per step into a preallocated buffer. Also reports the memory the
captured features hold next to what `output_hidden_states=True` would hold for the same call.

    python bench/vlm_capture.py                      # tiny random Qwen2-VL, CPU
    python bench/vlm_capture.py --real-size          # random-weight Qwen2-VL-7B config, bf16, on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinkdiff_core.prompts import cobsat_prompt  # noqa: E402
from thinkdiff_core.testing.tiny import write_tiny_qwen_vl  # noqa: E402
from thinkdiff_core.vlm import GenerationSettings, VisionLanguageModel  # noqa: E402


def real_size_vlm(tiny: VisionLanguageModel, device: torch.device, layers: int) -> VisionLanguageModel:
    """Qwen2-VL-7B's shapes with random bf16 weights, reusing the tiny tokenizer (its special ids)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = {name: tiny.tokenizer.convert_tokens_to_ids(name) for name in
           ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=layers,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                         rope_theta=1000000.0, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=min(layers, 32), embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.generation_config = tiny.model.generation_config
    model.eval().requires_grad_(False)
    image_processor = type(tiny.image_processor)(min_pixels=56 * 56, max_pixels=512 * 512, patch_size=14, merge_size=2,
                                                 temporal_patch_size=2)
    return VisionLanguageModel(model, tiny.tokenizer, image_processor, tiny.chat_template, "random-Qwen2-VL-7B")


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="Qwen2-VL-7B shapes, random bf16 weights (GPU)")
    parser.add_argument("--layers", type=int, default=28, help="decoder layers for --real-size (28 = the real 7B)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per generate (reference: 128)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1 if not torch.cuda.is_available() else torch.get_num_threads())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    folder = write_tiny_qwen_vl(Path(tempfile.mkdtemp()) / "tiny-qwen2-vl")
    vlm = VisionLanguageModel.from_pretrained(folder, dtype="fp32", device=device)
    size = (64, 64)
    if args.real_size:
        vlm, size = real_size_vlm(vlm, device, args.layers), (448, 448)
    images = [Image.new("RGB", size, colour) for colour in ("white", "blue")]
    prompt = cobsat_prompt(images, ["white", "blue", "red"])
    settings = GenerationSettings(temperature=0.0, max_new_tokens=args.tokens, min_new_tokens=args.tokens)

    def bare_generate(**extra):
        inputs = {k: v.to(device) for k, v in vlm.prepare([prompt]).items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(vlm.model.dtype)
        return vlm.model.generate(
            **inputs, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False, temperature=None,
            top_p=None, top_k=None, repetition_penalty=1.0, suppress_tokens=vlm.placeholder_ids,
            eos_token_id=vlm.eos_token_ids, pad_token_id=vlm.pad_token_id, **extra)

    captured = vlm.generate([prompt], settings)
    bare = bare_generate()
    same_tokens = captured.token_ids[0].tolist() == bare[0, -args.tokens:].cpu().tolist()
    with_states = bare_generate(return_dict_in_generate=True, output_hidden_states=True)
    hidden_bytes = sum(t.numel() * t.element_size() for step in with_states.hidden_states for t in step)
    del with_states

    capture_times, bare_times = [], []
    for _ in range(args.repeats):  # interleaved so drift in machine load hits both sides alike
        capture_times.append(timed(lambda: vlm.generate([prompt], settings), 1))
        bare_times.append(timed(bare_generate, 1))
    capture_s, bare_s = statistics.median(capture_times), statistics.median(bare_times)
    feature_bytes = captured.features.numel() * captured.features.element_size()
    expected_bytes = args.tokens * vlm.hidden_size * captured.features.element_size()

    print(f"device: {device} ({'random Qwen2-VL-7B shapes, %d layers' % args.layers if args.real_size else 'tiny Qwen2-VL'})")
    print(f"same_tokens: {same_tokens}")
    print(f"generate_without_capture_s: {bare_s:.4f}")
    print(f"generate_with_capture_s: {capture_s:.4f}")
    print(f"capture_wall_ratio: {capture_s / bare_s:.3f}")
    print(f"captured_feature_bytes: {feature_bytes}")
    print(f"tokens_x_hidden_x_dtype_bytes: {expected_bytes}")
    print(f"output_hidden_states_bytes: {hidden_bytes}")
    print(f"output_hidden_states_over_capture: {hidden_bytes / feature_bytes:.1f}")


if __name__ == "__main__":
    main()
