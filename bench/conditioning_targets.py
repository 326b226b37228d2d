"""Conditioning assembly for each target model next to one sampling step of the tiny FLUX stand-in.

Per target: the aligner 3584 -> 4096 -> 4096 (Qwen2-VL-7B's width, random weights) on 128 tokens, then
`merge_conditioning` into a base at real size as that model's ComfyUI text encoder writes it: FLUX and
Kontext (T5 [1, 256, 4096], pooled [1, 768]; Kontext with a reference latent), SD3 (77 CLIP-L+G tokens
zero-padded to 4096, 77 T5 tokens, pooled [1, 2048]), Chroma (T5 only), LTX-Video (T5 padded to 128 with a
mask, assembled under a token budget of 256), FLUX after Redux (729 image tokens and a [1, 986, 986] bias).
The step is the 1 double + 1 single block FLUX of bench/conditioning_node.py at 512x512.

    python bench/conditioning_targets.py [--repeats 20]
"""

from __future__ import annotations

import argparse

import torch
from _pack import load_pack, module
from conditioning_node import ALIGNER_IN, ALIGNER_OUT, TOKENS, flux_step, timed


def bases() -> dict[str, tuple[list, str, str, int]]:
    """Target name -> (base conditioning, mode, target choice, token budget), sizes as ComfyUI writes them."""
    t5 = torch.randn(1, 256, ALIGNER_OUT)
    clip = torch.nn.functional.pad(torch.randn(1, 77, 2048), (0, 2048))
    mask = torch.tensor([[1] * 20 + [0] * 108])
    bias = torch.zeros(1, 256 + 729 + 1, 256 + 729 + 1, dtype=torch.float16)
    return {
        "flux": ([[t5, {"pooled_output": torch.randn(1, 768), "guidance": 3.5}]], "replace", "flux", 0),
        "flux_kontext": ([[t5, {"pooled_output": torch.randn(1, 768), "guidance": 2.5,
                                "reference_latents": [torch.randn(1, 16, 128, 128)]}]], "replace", "flux_kontext", 0),
        "sd3": ([[torch.cat([clip, torch.randn(1, 77, ALIGNER_OUT)], 1), {"pooled_output": torch.randn(1, 2048)}]],
                "prepend", "sd3", 0),
        "chroma": ([[torch.randn(1, 12, ALIGNER_OUT), {"pooled_output": None}]], "prepend", "chroma", 0),
        "ltxv_budget": ([[torch.randn(1, 128, ALIGNER_OUT), {"pooled_output": None, "attention_mask": mask}]],
                        "prepend", "ltxv", 256),
        "flux_after_redux": ([[torch.randn(1, 256 + 729, ALIGNER_OUT), {
            "pooled_output": torch.randn(1, 768), "guidance": 3.5, "attention_mask": bias,
            "attention_mask_img_shape": (1, 1)}]], "prepend", "flux", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed assembly calls per target (FLUX: a fifth, at least 2)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        torch.set_num_threads(min(2, torch.get_num_threads()))
    load_pack(None)
    core = module("thinkdiff_core")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    aligner = core.LoadedAligner(core.Aligner(ALIGNER_IN, ALIGNER_OUT).to(device=device, dtype=dtype).eval().requires_grad_(False),
                                 core.AlignerInfo("Qwen/Qwen2-VL-7B-Instruct", core.LVLM_RECIPE))
    tokens = core.ThinkDiffTokens(torch.randn(1, TOKENS, ALIGNER_IN, dtype=dtype), "Qwen/Qwen2-VL-7B-Instruct", core.LVLM_RECIPE)
    step, parameters = flux_step(1, 1, 512, device, dtype)
    step_ms = timed(step, max(2, args.repeats // 5), device)
    rows = {}
    for name, (base, mode, target, budget) in bases().items():
        base = [[cond.to(device=device, dtype=dtype), extras] for cond, extras in base]
        rows[name] = timed(lambda: core.merge_conditioning(base, aligner(tokens), mode, target=target,
                                                           token_budget=budget), args.repeats, device)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'} ({dtype}, {torch.get_num_threads()} threads)")
    print(f"flux_stand_in: 1 double + 1 single block, {parameters / 1e6:.0f} M parameters, 512x512, {TOKENS} text tokens")
    print(f"flux_stand_in_step_ms: {step_ms:.1f}")
    for name, ms in rows.items():
        print(f"assembly_{name}_ms: {ms:.3f}")
        print(f"assembly_{name}_over_stand_in_step_percent: {100 * ms / step_ms:.3f}")


if __name__ == "__main__":
    main()
