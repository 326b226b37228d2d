"""Make one ThinkDiff image from the command line.

    python -m thinkdiff_core.generate --image A.png --image B.png --words w1 w2 w3 --out out.png
    python -m thinkdiff_core.generate --variant clip --image A.png --image B.png --prompt "..." --out out.png

The aligner decides the variant (`--variant` only picks the default aligner, or the tiny models).
ThinkDiff-LVLM defaults: Qwen2-VL-7B-Instruct, the official LVLM aligner, FLUX.1-dev; guidance 3.5, 28
steps, 512x512, VLM sampling at temperature 0.6, top-p 0.9, exactly 128 new tokens. ThinkDiff-CLIP
defaults: BLIP-2's vision tower (`Salesforce/blip2-flan-t5-xxl`, vision files only), the official CLIP
aligner, FLUX.1-dev with its T5 (prompt padded to 128 tokens); guidance 3.5, 28 steps, 1024x1024.
Local folders and files are accepted for every model. `--tiny` builds tiny random models in a
temporary folder so the whole path runs offline on any CPU (the image is noise; the point is that
everything runs). Prints the VLM's answer (LVLM) and where the image went; never replaces an existing
file without `--overwrite`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import LoadedAligner, load_aligner
from .cli import ShowsDefaults, positive_int, run_cli
from .devices import DTYPES
from .files import check_writable_folder
from .images import open_image, save_image
from .pipeline import (
    FLUX_DEV_ID, OFFICIAL_CLIP_ALIGNER, OFFICIAL_LVLM_ALIGNER, OFFLOAD_MODES, QWEN2_VL_ID, REFERENCE_GUIDANCE,
    REFERENCE_SIZE, REFERENCE_SIZE_CLIP, REFERENCE_STEPS, REFERENCE_T5_LENGTH, ThinkDiffPipeline, ThinkDiffRequest,
    resolve_aligner_file,
)
from .precision import PRECISIONS
from .progress import token_bar
from .prompts import PRESETS
from .variants import SOURCES
from .vision_files import BLIP2_HUB_ID
from .vlm import GenerationSettings

TINY_SIZE = 64
TINY_STEPS = 4
OFFICIAL_ALIGNERS = {"lvlm": OFFICIAL_LVLM_ALIGNER, "clip": OFFICIAL_CLIP_ALIGNER}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m thinkdiff_core.generate", description=__doc__.splitlines()[0],
                                     formatter_class=ShowsDefaults)
    defaults = GenerationSettings()
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--image", action="append", default=[],
                        help="a reference image; repeat for several (required, except with --tiny: then two plain "
                             "pictures it makes, a red and a blue square, with the words red blue green (LVLM) unless --words)")
    inputs.add_argument("--words", nargs="+", default=[],
                        help="LVLM: cobsat_reasoning: one word per image, then the query word; compose: labels (+ a request)")
    inputs.add_argument("--preset", choices=PRESETS, default="cobsat_reasoning", help="LVLM: how the VLM is asked")
    inputs.add_argument("--instruction", default="", help="LVLM: the instruction of the custom preset")
    inputs.add_argument("--prompt", default="", help="CLIP: the text FLUX reads after the images (may be empty)")
    inputs.add_argument("--out", required=True, type=Path, help="output image (.png, .jpg, .webp)")
    inputs.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    models = parser.add_argument_group("models (local paths or Hub ids)")
    models.add_argument("--variant", choices=sorted(SOURCES), default=None,
                        help="the default aligner (and tiny models) to use; otherwise read from --aligner (default lvlm)")
    models.add_argument("--aligner", default=None,
                        help=f"aligner file or <repo>/<file> (default {OFFICIAL_LVLM_ALIGNER}, clip: {OFFICIAL_CLIP_ALIGNER})")
    models.add_argument("--vlm", default=None, help=f"LVLM: VLM folder or Hub id (default {QWEN2_VL_ID})")
    models.add_argument("--vision-encoder", default=None,
                        help=f"CLIP: BLIP-2 folder, converted vision file or Hub id (default {BLIP2_HUB_ID})")
    models.add_argument("--flux", default=None, help=f"FLUX diffusers folder or Hub id (default {FLUX_DEV_ID})")
    models.add_argument("--tiny", action="store_true", help="build tiny random models offline (CPU smoke run); --vlm, --vision-encoder and --aligner may "
                             "name tiny ones of your own instead, such as python -m train.demo's")
    models.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="what FLUX and the aligner compute in (auto: bf16 on a GPU, fp32 on the CPU)")
    models.add_argument("--vlm-precision", default=None, choices=PRECISIONS,
                        help="the VLM's weights (default: --dtype); fp8, int8 and nf4 store them quantized (about 1/2, "
                             "1/2 and 1/3 of bf16's 16.6 GB for Qwen2-VL-7B; int8 the closest to bf16); auto takes fp8 "
                             "where bf16 does not fit the GPU")
    models.add_argument("--device", default=None, help="cuda, cuda:1, mps, cpu (default: cuda if available)")
    models.add_argument("--offload", choices=OFFLOAD_MODES, default="none",
                        help="model: whole models visit the GPU in turn (FLUX's ~24 GB transformer must fit); "
                             "sequential: layer by layer (least memory, slowest)")
    models.add_argument("--trust-remote-code", action="store_true", help="allow the VLM folder's own Python code")
    sampling = parser.add_argument_group("sampling (reference defaults)")
    sampling.add_argument("--seed", type=int, default=defaults.seed, help="seeds the VLM's sampling and FLUX's noise")
    sampling.add_argument("--steps", type=positive_int, default=None, help=f"FLUX steps (default {REFERENCE_STEPS}; tiny {TINY_STEPS})")
    sampling.add_argument("--guidance", type=float, default=REFERENCE_GUIDANCE, help="FLUX's distilled guidance scale")
    sampling.add_argument("--height", type=positive_int, default=None,
                          help=f"image height (default {REFERENCE_SIZE}, clip {REFERENCE_SIZE_CLIP}, tiny {TINY_SIZE})")
    sampling.add_argument("--width", type=positive_int, default=None,
                          help=f"image width (default {REFERENCE_SIZE}, clip {REFERENCE_SIZE_CLIP}, tiny {TINY_SIZE})")
    sampling.add_argument("--max-sequence-length", type=int, default=REFERENCE_T5_LENGTH,
                          help="CLIP: T5 tokens of the prompt, padding included (the reference's 128; FLUX allows 512)")
    sampling.add_argument("--temperature", type=float, default=defaults.temperature,
                          help="VLM sampling temperature (0: greedy)")
    sampling.add_argument("--top-p", type=float, default=defaults.top_p,
                          help="VLM nucleus sampling: the share of probability kept")
    sampling.add_argument("--max-new-tokens", type=positive_int, default=defaults.max_new_tokens,
                          help="the length of the VLM's answer in tokens")
    sampling.add_argument("--min-new-tokens", type=int, default=None,
                          help="the VLM answer's least length (default: --max-new-tokens, the reference)")
    return parser


def check_output(path: Path, overwrite: bool) -> Path:
    """Refuse an existing output before any model is loaded (loading FLUX takes minutes)."""
    path = path.expanduser()
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name such as {path / 'thinkdiff.png'}.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it, or choose another --out.")
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise ValueError(f"--out {path.name}: use a .png, .jpg or .webp name.")
    check_writable_folder(path.parent, "--out")
    return path


def model_parts(args: argparse.Namespace, workdir: Path) -> dict:
    """`from_pretrained`'s model arguments, with the aligner loaded (it is small and decides the variant)."""
    if args.tiny:
        if args.flux is not None:
            raise ValueError("--tiny builds its own FLUX; drop --flux or drop --tiny.")
        from .testing.tiny_pipeline import write_tiny_thinkdiff, write_tiny_thinkdiff_clip

        paths = (write_tiny_thinkdiff_clip if args.variant == "clip" else write_tiny_thinkdiff)(workdir)
        # tiny models of one's own (train.demo's) replace the random ones; their aligner fits the tiny FLUX
        paths.update({name: getattr(args, name) for name in ("vlm", "vision_encoder", "aligner")
                      if getattr(args, name) is not None})
        return {**paths, "aligner": load_aligner(paths["aligner"])}
    aligner: LoadedAligner = load_aligner(resolve_aligner_file(args.aligner or OFFICIAL_ALIGNERS[args.variant or "lvlm"]))
    variant = aligner.info.variant
    if args.variant not in (None, variant):
        raise ValueError(f"--variant {args.variant} but --aligner {args.aligner} is a ThinkDiff-{variant.upper()} aligner "
                         f"({aligner.info.token_recipe}); drop --variant (the aligner decides) or pass a "
                         f"{args.variant.upper()} aligner.")
    vision_encoder = args.vision_encoder or (BLIP2_HUB_ID if variant == "clip" else None)
    return {"flux": args.flux or FLUX_DEV_ID, "aligner": aligner, "vlm": args.vlm, "vision_encoder": vision_encoder}


def tiny_images() -> list[Image.Image]:
    """`--tiny` without `--image`: two plain pictures, enough for a smoke run of the whole path."""
    return [Image.new("RGB", (64, 64), colour) for colour in ((220, 30, 30), (30, 60, 220))]


def run(args: argparse.Namespace) -> Path:
    out = check_output(args.out, args.overwrite)
    if not args.image and not args.tiny:
        raise ValueError("give at least one reference picture with --image PATH (repeat it for several); only --tiny "
                         "makes its own.")
    images = [open_image(path) for path in args.image] if args.image else tiny_images()
    # LVLM's CoBSAT preset wants one word per picture and the query last; CLIP reads no words
    words = args.words or ([] if args.image or args.variant == "clip" else ["red", "blue", "green"])
    request = ThinkDiffRequest(images, words, args.preset, args.instruction, args.prompt)
    settings = GenerationSettings(
        seed=args.seed, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens if args.min_new_tokens is None else args.min_new_tokens,
    )
    with tempfile.TemporaryDirectory(prefix="thinkdiff-tiny-") as workdir:
        parts = model_parts(args, Path(workdir))
        SOURCES[parts["aligner"].info.variant].check_requests([request])  # before the large models load
        if args.tiny:
            pipeline = ThinkDiffPipeline.from_pretrained(**parts, dtype="fp32", vlm_precision=args.vlm_precision,
                                                         device="cpu", max_sequence_length=args.max_sequence_length)
        else:
            pipeline = ThinkDiffPipeline.from_pretrained(
                **parts, dtype=args.dtype, vlm_precision=args.vlm_precision, device=args.device, offload=args.offload,
                trust_remote_code=args.trust_remote_code, max_sequence_length=args.max_sequence_length)
        size = TINY_SIZE if args.tiny else None  # None: the variant's reference size
        with token_bar() as on_token:
            result = pipeline(request, settings, guidance_scale=args.guidance, on_token=on_token,
                              num_inference_steps=args.steps or (TINY_STEPS if args.tiny else REFERENCE_STEPS),
                              height=args.height or size, width=args.width or size)
    if result.texts:
        print(f"VLM: {result.texts[0]}")
    written = save_image(result.images[0], out, overwrite=args.overwrite)
    print(f"wrote {written}")
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tiny:
        torch.set_num_threads(1)  # tiny models only lose time to thread hand-offs
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
