"""Conditioning node time next to one FLUX sampling step.

The node: aligner 3584 -> 4096 -> 4096 (Qwen2-VL-7B's width, the official aligner's shape, random weights)
on 128 tokens, merged into a [1, 256, 4096] base conditioning in `replace` mode. With a ComfyUI checkout
(`--comfyui-dir` / COMFYUI_DIR) the real node's `execute` is timed, memory-manager call included;
otherwise the library calls the node makes (`LoadedAligner.__call__` + `merge_conditioning`).

The FLUX step: one transformer forward of FLUX.1 at the workflow's 512x512 (1024 image tokens) with the
128 aligned text tokens, in diffusers' implementation of the same architecture. Default depth is the
tiny stand-in the ComfyUI suite loads (1 double + 1 single block, hidden 3072); `--flux-blocks 19,38`
is FLUX.1-dev's real depth (random weights: timing does not depend on them; needs a GPU's memory).
The target: on a GPU the node stays under 1% of a real FLUX.1-dev step.

    python bench/conditioning_node.py [--comfyui-dir DIR] [--flux-blocks 1,1] [--size 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _pack import load_pack, module

ALIGNER_IN, ALIGNER_OUT, TOKENS = 3584, 4096, 128
FLUX_DEV_BLOCKS = (19, 38)


def timed(function, repeats: int, device: torch.device) -> float:
    """Median wall time of `function()` in milliseconds (after one warm-up call), device work included."""
    function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def conditioning_call(comfyui: bool, device: torch.device, dtype: torch.dtype):
    core = module("thinkdiff_core")
    torch.manual_seed(0)
    aligned = core.Aligner(ALIGNER_IN, ALIGNER_OUT).to(device=device, dtype=dtype).eval().requires_grad_(False)
    aligner = core.LoadedAligner(aligned, core.AlignerInfo("Qwen/Qwen2-VL-7B-Instruct", core.LVLM_RECIPE))
    tokens = core.ThinkDiffTokens(torch.randn(1, TOKENS, ALIGNER_IN, dtype=dtype), "Qwen/Qwen2-VL-7B-Instruct", core.LVLM_RECIPE)
    base = [[torch.randn(1, 256, ALIGNER_OUT), {"pooled_output": torch.randn(1, 768), "guidance": 3.5}]]
    if comfyui:
        node = module("nodes.conditioning").ThinkDiffConditioning
        managed = module("nodes.comfy_models").ManagedModel(aligner, aligner.module)
        return lambda: node.execute(aligner=managed, tokens=tokens, conditioning=base, mode="replace")
    condition = module("nodes.operations").condition
    return lambda: condition(aligner, tokens, base, "replace")


def flux_parameters(double_blocks: int, single_blocks: int) -> int:
    """Parameter count of a FLUX of this depth, built on the meta device (no memory, no time)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=double_blocks, num_single_layers=single_blocks,
            attention_head_dim=128, num_attention_heads=24, joint_attention_dim=ALIGNER_OUT, pooled_projection_dim=768,
            guidance_embeds=True, axes_dims_rope=(16, 56, 56),
        )
    return sum(p.numel() for p in model.parameters())


def flux_step(double_blocks: int, single_blocks: int, size: int, device: torch.device, dtype: torch.dtype):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=double_blocks, num_single_layers=single_blocks, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=ALIGNER_OUT, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    ).to(device=device, dtype=dtype).eval().requires_grad_(False)
    side = size // 16  # 8x VAE downsampling, then 2x2 patches
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    floats = dict(hidden_states=torch.randn(1, side * side, 64), encoder_hidden_states=torch.randn(1, TOKENS, ALIGNER_OUT),
                  pooled_projections=torch.randn(1, 768), timestep=torch.tensor([0.5]), guidance=torch.tensor([3.5]))
    inputs = {k: v.to(device=device, dtype=dtype) for k, v in floats.items()}
    inputs["img_ids"] = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float().to(device)
    inputs["txt_ids"] = torch.zeros(TOKENS, 3, device=device)
    parameters = sum(p.numel() for p in model.parameters())

    def step() -> None:
        with torch.no_grad():
            model(**inputs, return_dict=False)

    return step, parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", help="a ComfyUI checkout: time the real node (default: COMFYUI_DIR)")
    parser.add_argument("--flux-blocks", default="1,1", help="double,single blocks (FLUX.1-dev: 19,38)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (the workflow's 512)")
    parser.add_argument("--repeats", type=int, default=20, help="timed conditioning calls (FLUX: a fifth, at least 2)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        torch.set_num_threads(min(2, torch.get_num_threads()))
    _, comfyui = load_pack(args.comfyui_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    double_blocks, single_blocks = (int(n) for n in args.flux_blocks.split(","))

    node_ms = timed(conditioning_call(comfyui, device, dtype), args.repeats, device)
    step, parameters = flux_step(double_blocks, single_blocks, args.size, device, dtype)
    step_ms = timed(step, max(2, args.repeats // 5), device)

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name} ({dtype}, {torch.get_num_threads()} threads)")
    print(f"conditioning_path: {'ComfyUI node execute (load_models_gpu included)' if comfyui else 'library calls of the node'}")
    print(f"flux_model: {double_blocks} double + {single_blocks} single blocks, {parameters / 1e6:.0f} M parameters, "
          f"{args.size}x{args.size}, {TOKENS} text tokens")
    print(f"conditioning_node_ms: {node_ms:.3f}")
    print(f"flux_step_ms: {step_ms:.1f}")
    print(f"conditioning_over_flux_step_percent: {100 * node_ms / step_ms:.3f}")
    if (double_blocks, single_blocks) != FLUX_DEV_BLOCKS:
        # Not measured: a FLUX.1-dev step here, scaled from the measured one by parameter count (compute per token
        # is proportional to it at a fixed token count). Measure it on a GPU with --flux-blocks 19,38.
        dev_ms = step_ms * flux_parameters(*FLUX_DEV_BLOCKS) / parameters
        print(f"flux_dev_step_ms_estimated_from_parameters: {dev_ms:.0f}")
        print(f"conditioning_over_flux_dev_step_percent_estimated: {100 * node_ms / dev_ms:.3f}")


if __name__ == "__main__":
    main()
