"""Tiny stand-in model files, written in the layouts the real files have, for a real ComfyUI to load.

- FLUX.1-dev: the official (Black Forest Labs) key layout with 1 double and 1 single block. ComfyUI's
  model detection fixes hidden size 3072 / 24 heads, so this is the smallest FLUX its UNETLoader
  accepts (~545 M parameters, ~1.1 GB in bf16); `guidance_in` makes it a "dev" model, and
  `txt_in.weight`'s width is the text width it reads (4096 like T5-XXL, what the aligner writes).
- Chroma: the FLUX block layout without the per-block modulation (Chroma computes it in its
  `distilled_guidance_layer`, 5 layers 5120 wide, fixed by detection) and with no `vector_in`/`time_in`/
  `guidance_in`; 1+1 blocks, ~631 M parameters (~1.3 GB in bf16), the smallest ComfyUI detects as Chroma.
- FLUX.1 Kontext [dev] is published in the FLUX.1-dev key layout: the same stand-in file, under its name.
- SD3.5: an MMDiT checkpoint in Stability's key layout (`model.diffusion_model.joint_blocks...`, RMS q/k
  norms as SD3.5 has), depth 2. Detection reads the hidden size as 64 x depth, so this is 128 wide with
  2 heads (~3 M parameters without the 192x192 position table); `context_embedder` reads 4096-wide
  text and `y_embedder` the 2048-wide pooled CLIP-L+G vector. It holds no VAE (the real file does):
  the suite decodes with TAESD3, like TAEF1 for FLUX.
- LTX-Video 0.9.x: one checkpoint holding the transformer under `model.diffusion_model.` and the causal video VAE
  under `vae.`, with the official file's `config` metadata (a JSON with "transformer" and "vae" sections, which
  ComfyUI's detection and VAE loader read). The tensor names and shapes come from ComfyUI's own LTXVModel and
  VideoVAE classes, built on the meta device in a child process of the running Python (with COMFYUI_DIR on its
  path); the values are this file's. Transformer: 1 block, 2 heads x 32 (64 wide), `caption_projection` reading
  4096-wide T5-XXL tokens, 128 latent channels; VAE: patch 4 and three 2x2x2 `compress_all` stages (the real
  8x32x32 compression; ComfyUI fixes 128 latent channels and the 32x / 8x ratios) around one `res_x` block at the
  128 channels the decoder's base width fixes, pixel norm, no timestep conditioning (~15 M parameters in all,
  ~31 MB in bf16).
- TAEF1 / TAESD3: the tiny FLUX / SD3 autoencoders' encoder/decoder files (models/vae_approx/), so
  VAELoader offers "taef1" and "taesd3". Every tensor gets explicit random values (ComfyUI leaves
  missing ones uninitialised).
- The official ThinkDiff `.pth` layout: `tests/tiny_files.py` (`write_official_aligner`).
- BLIP-2: `thinkdiff_core.testing.tiny.write_tiny_blip2`, a tiny folder in the blip2-flan-t5-xxl layout.
- A test-only custom node standing in for ComfyUI's T5-XXL text encoders (whose loaders always build a
  full-size T5-XXL, too big for the test machines): it outputs conditioning of the shape each loader
  gives (`layout`): FLUX (256 x 4096 and pooled CLIP-L 768), SD3 (77 CLIP-L+G tokens zero-padded from
  2048 to 4096, then 256 T5 tokens; pooled 2048) or T5 only (Chroma, LTX-Video: 256 x 4096 and an integer mask,
  as their encoders give).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

FLUX_HIDDEN = 3072
FLUX_MLP = 4 * FLUX_HIDDEN
FLUX_HEAD_DIM = 128
FLUX_LATENT_CHANNELS = 16
CLIP_POOLED_WIDTH = 768
SD3_POOLED_WIDTH = 2048  # CLIP-L 768 + CLIP-G 1280


def flux_shapes(context_width: int = 4096, double_blocks: int = 1, single_blocks: int = 1) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a FLUX.1-dev checkpoint with the given depth."""
    h, mlp = FLUX_HIDDEN, FLUX_MLP
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, out_features: int, in_features: int) -> None:
        shapes[f"{name}.weight"] = (out_features, in_features)
        shapes[f"{name}.bias"] = (out_features,)

    linear("img_in", h, FLUX_LATENT_CHANNELS * 4)
    linear("txt_in", h, context_width)
    for embedder, width in (("time_in", 256), ("vector_in", CLIP_POOLED_WIDTH), ("guidance_in", 256)):
        linear(f"{embedder}.in_layer", h, width)
        linear(f"{embedder}.out_layer", h, h)
    for block in range(double_blocks):
        for stream in ("img", "txt"):
            prefix = f"double_blocks.{block}.{stream}"
            linear(f"{prefix}_mod.lin", 6 * h, h)
            linear(f"{prefix}_attn.qkv", 3 * h, h)
            shapes[f"{prefix}_attn.norm.query_norm.scale"] = (FLUX_HEAD_DIM,)
            shapes[f"{prefix}_attn.norm.key_norm.scale"] = (FLUX_HEAD_DIM,)
            linear(f"{prefix}_attn.proj", h, h)
            linear(f"{prefix}_mlp.0", mlp, h)
            linear(f"{prefix}_mlp.2", h, mlp)
    for block in range(single_blocks):
        prefix = f"single_blocks.{block}"
        linear(f"{prefix}.linear1", 3 * h + mlp, h)
        linear(f"{prefix}.linear2", h, h + mlp)
        shapes[f"{prefix}.norm.query_norm.scale"] = (FLUX_HEAD_DIM,)
        shapes[f"{prefix}.norm.key_norm.scale"] = (FLUX_HEAD_DIM,)
        linear(f"{prefix}.modulation.lin", 3 * h, h)
    linear("final_layer.linear", FLUX_LATENT_CHANNELS * 4, h)
    linear("final_layer.adaLN_modulation.1", 2 * h, h)
    return shapes


CHROMA_APPROXIMATOR_WIDTH = 5120
CHROMA_APPROXIMATOR_LAYERS = 5


def chroma_shapes(double_blocks: int = 1, single_blocks: int = 1) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Chroma checkpoint (lodestones' layout) with the given depth."""
    dropped = ("_mod.lin.", "modulation.lin.", "vector_in.", "time_in.", "guidance_in.", "final_layer.adaLN_modulation.")
    shapes = {name: shape for name, shape in flux_shapes(4096, double_blocks, single_blocks).items()
              if not any(part in name for part in dropped)}
    width, prefix = CHROMA_APPROXIMATOR_WIDTH, "distilled_guidance_layer"
    shapes[f"{prefix}.in_proj.weight"], shapes[f"{prefix}.in_proj.bias"] = (width, 64), (width,)
    for layer in range(CHROMA_APPROXIMATOR_LAYERS):
        for name in ("in_layer", "out_layer"):
            shapes[f"{prefix}.layers.{layer}.{name}.weight"] = (width, width)
            shapes[f"{prefix}.layers.{layer}.{name}.bias"] = (width,)
        shapes[f"{prefix}.norms.{layer}.scale"] = (width,)
    shapes[f"{prefix}.out_proj.weight"], shapes[f"{prefix}.out_proj.bias"] = (FLUX_HIDDEN, width), (FLUX_HIDDEN,)
    return shapes


def write_tiny_chroma(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_random(chroma_shapes(), seed, torch.bfloat16), str(path))
    return path


def sd3_shapes(depth: int = 2, context_width: int = 4096, pos_embed_max_size: int = 192) -> dict[str, tuple[int, ...]]:
    """Tensor names (without `model.diffusion_model.`) and shapes of an SD3.5 MMDiT with `depth` joint blocks."""
    h, head_dim, channels, patch = 64 * depth, 64, FLUX_LATENT_CHANNELS, 2
    shapes: dict[str, tuple[int, ...]] = {"pos_embed": (1, pos_embed_max_size ** 2, h)}

    def linear(name: str, out_features: int, in_features: int) -> None:
        shapes[f"{name}.weight"] = (out_features, in_features)
        shapes[f"{name}.bias"] = (out_features,)

    shapes["x_embedder.proj.weight"] = (h, channels, patch, patch)
    shapes["x_embedder.proj.bias"] = (h,)
    for embedder, width in (("t_embedder", 256), ("y_embedder", SD3_POOLED_WIDTH)):
        linear(f"{embedder}.mlp.0", h, width)
        linear(f"{embedder}.mlp.2", h, h)
    linear("context_embedder", h, context_width)
    for block in range(depth):
        for stream in ("context_block", "x_block"):
            prefix = f"joint_blocks.{block}.{stream}"
            last_context = stream == "context_block" and block == depth - 1  # "pre_only": no output projection, no MLP
            linear(f"{prefix}.attn.qkv", 3 * h, h)
            shapes[f"{prefix}.attn.ln_q.weight"] = (head_dim,)
            shapes[f"{prefix}.attn.ln_k.weight"] = (head_dim,)
            linear(f"{prefix}.adaLN_modulation.1", (2 if last_context else 6) * h, h)
            if not last_context:
                linear(f"{prefix}.attn.proj", h, h)
                linear(f"{prefix}.mlp.fc1", 4 * h, h)
                linear(f"{prefix}.mlp.fc2", h, 4 * h)
    linear("final_layer.linear", patch * patch * channels, h)
    linear("final_layer.adaLN_modulation.1", 2 * h, h)
    return shapes


def write_tiny_sd35(path: Path, seed: int = 0) -> Path:
    """A checkpoint (models/checkpoints/) holding only the MMDiT, under the prefix ComfyUI's loader reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _random(sd3_shapes(), seed, torch.float16)
    tensors["pos_embed"] = tensors["pos_embed"] * 0.1
    save_file({f"model.diffusion_model.{name}": tensor for name, tensor in tensors.items()}, str(path))
    return path


def _random(shapes: dict[str, tuple[int, ...]], seed: int, dtype: torch.dtype,
            ones: tuple[str, ...] = (".scale", ".ln_q.weight", ".ln_k.weight")) -> dict[str, torch.Tensor]:
    """Small random weights, zero biases, unit norm scales (names ending in `ones`): finite activations through
    every block."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in shapes.items():
        if name.endswith(ones):
            tensors[name] = torch.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            tensors[name] = torch.zeros(shape, dtype=dtype)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            tensors[name] = (torch.randn(shape, generator=generator) / fan_in ** 0.5).to(dtype)
    return tensors


LTXV_CONFIG = {
    "transformer": {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 32, "cross_attention_dim": 64,
                    "caption_channels": 4096, "in_channels": 128},
    "vae": {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
            "latent_channels": 128,
            "blocks": [["compress_all", 1], ["compress_all", 1], ["compress_all", 1], ["res_x", 1]],
            "patch_size": 4, "norm_layer": "pixel_norm", "latent_log_var": "uniform", "use_quant_conv": False,
            "causal_decoder": False, "timestep_conditioning": False, "scaling_factor": 1.0},
}
"""The tiny LTX-Video's `config` metadata: ComfyUI's detection takes the transformer section over what it reads from
the shapes (which alone would give 32 heads of 2), its VAE loader builds the VAE from the vae section."""

_LTXV_SHAPES_SCRIPT = """
import json, sys
from comfy.cli_args import args
args.cpu = True  # a CPU-only torch: keep ComfyUI's device probe off CUDA
import torch
import comfy.ops
from comfy.ldm.lightricks.model import LTXVModel
from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
config = json.loads(sys.argv[1])
with torch.device("meta"):
    parts = {"model.diffusion_model.": LTXVModel(**config["transformer"], operations=comfy.ops.disable_weight_init),
             "vae.": VideoVAE(config=config["vae"])}
print(json.dumps({prefix + name: list(tensor.shape) for prefix, part in parts.items()
                  for name, tensor in part.state_dict().items()}))
"""


def ltxv_shapes(comfyui_dir: Path, config: dict = LTXV_CONFIG) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of an LTX-Video checkpoint with `config`, as ComfyUI's own classes lay them out
    (asked of a child process so that this one never imports ComfyUI's modules)."""
    answer = subprocess.run([sys.executable, "-c", _LTXV_SHAPES_SCRIPT, json.dumps(config)], check=False,
                            cwd=comfyui_dir, env={**os.environ, "PYTHONPATH": str(comfyui_dir)}, capture_output=True,
                            text=True, timeout=300)
    if answer.returncode != 0:
        raise RuntimeError("building the LTX-Video stand-in's layout with ComfyUI's classes failed:\n"
                           + answer.stderr[-3000:])
    return {name: tuple(shape) for name, shape in json.loads(answer.stdout.strip().splitlines()[-1]).items()}


def write_tiny_ltxv(path: Path, comfyui_dir: Path | None = None, seed: int = 0) -> Path:
    """A checkpoint (models/checkpoints/) holding the transformer and the video VAE, `config` in its metadata."""
    comfyui_dir = Path(comfyui_dir or os.environ["COMFYUI_DIR"])
    shapes = ltxv_shapes(comfyui_dir)
    # unit q/k RMS norms and VAE latent spreads; zero latent means (and the unused statistics rows)
    tensors = _random(shapes, seed, torch.bfloat16, ones=("_norm.weight", "std-of-means", "mean-of-stds"))
    for name in shapes:
        if name.endswith(("mean-of-means", "per_channel_statistics.channel")):
            tensors[name] = torch.zeros(shapes[name], dtype=torch.bfloat16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"config": json.dumps(LTXV_CONFIG)})
    return path


def write_tiny_flux(path: Path, context_width: int = 4096, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_random(flux_shapes(context_width), seed, torch.bfloat16), str(path))
    return path


def _taesd_conv(shapes: dict, name: str, n_in: int, n_out: int, bias: bool = True, kernel: int = 3) -> None:
    shapes[f"{name}.weight"] = (n_out, n_in, kernel, kernel)
    if bias:
        shapes[f"{name}.bias"] = (n_out,)


def _taesd_block(shapes: dict, name: str, width: int = 64) -> None:
    for index in (0, 2, 4):
        _taesd_conv(shapes, f"{name}.conv.{index}", width, width)


def taesd_shapes(latent_channels: int = FLUX_LATENT_CHANNELS) -> tuple[dict, dict]:
    """The published TAESD encoder and decoder layouts (nn.Sequential indices), 64 channels wide."""
    encoder: dict[str, tuple[int, ...]] = {}
    _taesd_conv(encoder, "0", 3, 64)
    _taesd_block(encoder, "1")
    for start in (2, 6, 10):
        _taesd_conv(encoder, str(start), 64, 64, bias=False)
        for offset in (1, 2, 3):
            _taesd_block(encoder, str(start + offset))
    _taesd_conv(encoder, "14", 64, latent_channels)
    decoder: dict[str, tuple[int, ...]] = {}
    _taesd_conv(decoder, "1", latent_channels, 64)
    for start in (3, 8, 13):
        for offset in (0, 1, 2):
            _taesd_block(decoder, str(start + offset))
        _taesd_conv(decoder, str(start + 4), 64, 64, bias=False)
    _taesd_block(decoder, "18")
    _taesd_conv(decoder, "19", 64, 3)
    return encoder, decoder


def write_taef1(folder: Path, seed: int = 0, name: str = "taef1") -> Path:
    """models/vae_approx/{name}_encoder.safetensors and {name}_decoder.safetensors (taef1, or taesd3: the same
    16-channel layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    encoder, decoder = taesd_shapes()
    save_file(_random(encoder, seed, torch.float32), str(folder / f"{name}_encoder.safetensors"))
    save_file(_random(decoder, seed + 1, torch.float32), str(folder / f"{name}_decoder.safetensors"))
    return folder


STAND_IN_NODE_ID = "ThinkDiffTestStandInTextEncode"

STAND_IN_NODE_SOURCE = f'''"""Test-only: stands in for CLIPTextEncode + a T5-XXL text-encoder loader with conditioning of its shape.

Written by the ThinkDiff opt-in test suite into a temporary custom_nodes folder; never shipped.
"""
import hashlib

import torch


class StandInTextEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"text": ("STRING", {{"multiline": True}}), "width": ("INT", {{"default": 4096, "min": 1, "max": 8192}}),
                              "layout": (["flux", "sd3", "t5"], {{"default": "flux"}})}}}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing"

    def encode(self, text, width, layout="flux"):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        generator = torch.Generator().manual_seed(seed)
        cond = torch.randn(1, 256, width, generator=generator) * 0.1
        if layout == "t5":  # Chroma / LTX-Video: T5 only, a mask over the real tokens, no pooled vector
            mask = torch.zeros(1, 256, dtype=torch.long)  # ComfyUI's T5 encoders give integer masks
            mask[:, :1 + len(text.split())] = 1
            return ([[cond, {{"pooled_output": None, "attention_mask": mask}}]],)
        if layout == "sd3":  # 77 CLIP-L+G tokens (2048 wide, zero-padded to the T5 width), then T5
            clip = torch.zeros(1, 77, width)
            clip[:, :, :2048] = torch.randn(1, 77, 2048, generator=generator) * 0.1
            pooled = torch.randn(1, {SD3_POOLED_WIDTH}, generator=generator) * 0.1
            return ([[torch.cat([clip, cond], 1), {{"pooled_output": pooled}}]],)
        pooled = torch.randn(1, {CLIP_POOLED_WIDTH}, generator=generator) * 0.1
        return ([[cond, {{"pooled_output": pooled}}]],)


NODE_CLASS_MAPPINGS = {{"{STAND_IN_NODE_ID}": StandInTextEncode}}
'''


def write_stand_in_node(custom_nodes: Path) -> Path:
    path = custom_nodes / "thinkdiff_test_stand_in.py"
    path.write_text(STAND_IN_NODE_SOURCE)
    return path
