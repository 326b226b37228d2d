"""Tiny FLUX.1-dev-shaped diffusers folders and aligners: the whole ThinkDiff pipeline at toy size.

What `generate --tiny`, the CoBSAT harness's `--tiny` mode, tests and benchmarks load: the tiny VLM or BLIP-2
tower (`tiny.py`), a random aligner, and a tiny FLUX whose T5 space is as wide as the aligner's output.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .tiny import TINY_BLIP2_VISION_WIDTH, TINY_CLIP_HIDDEN, write_tiny_blip2, write_tiny_clip_text, write_tiny_qwen_vl, write_tiny_t5

TINY_FLUX_JOINT_DIM = 64
"""Width of the tiny FLUX's text stream: the tiny VLM's hidden size and the tiny T5's d_model, so a tiny
`Aligner(64, 64)` plays the role of the real `Aligner(3584, 4096)`."""


def write_tiny_flux(folder: str | os.PathLike[str], joint_attention_dim: int = TINY_FLUX_JOINT_DIM,
                    seed: int = 0) -> Path:
    """A tiny random FLUX.1-dev-shaped diffusers folder: what `FluxPipeline.from_pretrained` reads.

    `transformer/` (guidance-distilled like dev: `guidance_embeds=True`), `vae/` (16 latent channels,
    8x downsampling, FLUX's scaling and shift), `scheduler/` (FLUX.1-dev's flow-matching settings),
    `text_encoder/` + `tokenizer/` (tiny CLIP-L), `text_encoder_2/` + `tokenizer_2/` (tiny T5 encoder
    as wide as `joint_attention_dim`) and `model_index.json`. Images must be multiples of 16 pixels.
    """
    import tempfile

    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

    folder = Path(folder)
    write_tiny_clip_text(folder / "text_encoder", folder / "tokenizer", seed=seed)
    with tempfile.TemporaryDirectory() as scratch:  # FLUX keeps only the T5 encoder
        t5_folder = write_tiny_t5(Path(scratch) / "t5", d_model=joint_attention_dim, seed=seed)
        t5_encoder, t5_tokenizer = T5EncoderModel.from_pretrained(t5_folder), AutoTokenizer.from_pretrained(t5_folder)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=joint_attention_dim, pooled_projection_dim=TINY_CLIP_HIDDEN, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4,
        sample_size=64, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    pipeline = FluxPipeline(
        scheduler=scheduler, vae=vae, transformer=transformer,
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        text_encoder_2=t5_encoder, tokenizer_2=t5_tokenizer,
    )
    pipeline.save_pretrained(folder)
    return folder


def write_tiny_aligner(path: str | os.PathLike[str], source_model_id: str, input_size: int = 64,
                       output_size: int = TINY_FLUX_JOINT_DIM, token_recipe: str | None = None, seed: int = 0) -> Path:
    """A random aligner `input_size -> output_size` for `token_recipe` (default the LVLM recipe), saved in our format."""
    from ..aligner import Aligner
    from ..checkpoint import AlignerInfo, LoadedAligner, save_aligner
    from ..tokens import LVLM_RECIPE

    torch.manual_seed(seed)
    module = Aligner(input_size, output_size)
    info = AlignerInfo(source_model_id, token_recipe or LVLM_RECIPE, {"tiny": True})
    return save_aligner(path, LoadedAligner(module, info))


def write_tiny_thinkdiff(root: str | os.PathLike[str], seed: int = 0) -> dict[str, Path]:
    """Everything the scripting pipeline loads, tiny: `{"vlm": folder, "flux": folder, "aligner": file}`.

    The aligner reads the tiny Qwen2-VL's 64-wide states and writes the tiny FLUX's 64-wide prompt space.
    """
    root = Path(root)
    vlm = write_tiny_qwen_vl(root / "vlm", "qwen2_vl", seed=seed)
    flux = write_tiny_flux(root / "flux", seed=seed)
    aligner = write_tiny_aligner(root / "aligner.safetensors", source_model_id=vlm.name, seed=seed)
    return {"vlm": vlm, "flux": flux, "aligner": aligner}


def write_tiny_thinkdiff_clip(root: str | os.PathLike[str], seed: int = 0) -> dict[str, Path]:
    """Everything the CLIP pipeline loads, tiny: `{"vision_encoder": BLIP-2 folder, "flux": folder, "aligner": file}`.

    The BLIP-2 folder has the real 224px / patch-14 geometry (65 tokens per image, 32 wide); the aligner
    maps them to the tiny FLUX's 64-wide T5 space, where the tiny FLUX's own T5 encodes the prompt.
    """
    from ..tokens import CLIP_RECIPE

    root = Path(root)
    blip2 = write_tiny_blip2(root / "blip2", seed=seed, vision_width=TINY_BLIP2_VISION_WIDTH)
    flux = write_tiny_flux(root / "flux", seed=seed)
    aligner = write_tiny_aligner(root / "clip_aligner.safetensors", source_model_id=blip2.name,
                                 input_size=TINY_BLIP2_VISION_WIDTH, token_recipe=CLIP_RECIPE, seed=seed)
    return {"vision_encoder": blip2, "flux": flux, "aligner": aligner}
