"""Converters: `python -m thinkdiff_core.convert {aligner,vision} SRC DST.safetensors [--overwrite]`.

`aligner`: an official ThinkDiff `.pth` (read with `weights_only=True`) becomes our `.safetensors` with
the same tensors and provenance metadata.
`vision`: a BLIP-2 folder (blip2-flan-t5-xxl) becomes a vision-only `.safetensors` (the ThinkDiff-CLIP
vision tower, config in its metadata); only the shards that hold the tower are read.
Existing files are never replaced unless `--overwrite` is given.
"""

from __future__ import annotations

import argparse
import sys

from .checkpoint import convert_official, load_aligner
from .cli import ShowsDefaults, run_cli


def _convert_aligner(args: argparse.Namespace) -> None:
    written = convert_official(args.source, args.destination, overwrite=args.overwrite)
    info = load_aligner(written).info
    print(f"wrote {written} ({info.variant}, source {info.source_model_id}, recipe {info.token_recipe})")


def _convert_vision(args: argparse.Namespace) -> None:
    from .vision_files import convert_blip2_vision, read_vision_weights
    from .devices import DTYPES

    written = convert_blip2_vision(args.source, args.destination, overwrite=args.overwrite, dtype=DTYPES.get(args.dtype))
    weights = read_vision_weights(written)
    print(f"wrote {written} ({len(weights.tensors)} tensors, {weights.nbytes / 2**20:.1f} MiB, hidden "
          f"{weights.config.hidden_size}, source {weights.model_id})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m thinkdiff_core.convert", description=__doc__.splitlines()[0],
                                     formatter_class=ShowsDefaults)
    commands = parser.add_subparsers(dest="command", required=True)
    aligner = commands.add_parser("aligner", help="official .pth aligner -> our .safetensors", formatter_class=ShowsDefaults)
    aligner.add_argument("source", help="official checkpoint, e.g. thinkdiff_lvlm.pth")
    aligner.add_argument("destination", help="output .safetensors path")
    aligner.add_argument("--overwrite", action="store_true", help="replace the destination if it exists")
    aligner.set_defaults(run=_convert_aligner)
    vision = commands.add_parser("vision", help="BLIP-2 folder -> vision-only .safetensors (ThinkDiff-CLIP tower)",
                                 formatter_class=ShowsDefaults)
    vision.add_argument("source", help="BLIP-2 model folder, e.g. models/thinkdiff/blip2-flan-t5-xxl")
    vision.add_argument("destination", help="output .safetensors path, e.g. models/clip_vision/blip2_vision.safetensors")
    vision.add_argument("--dtype", choices=["keep", "fp32", "fp16", "bf16"], default="keep",
                        help="store the tensors in this dtype (bf16 halves an fp32 file); default: as in the folder")
    vision.add_argument("--overwrite", action="store_true", help="replace the destination if it exists")
    vision.set_defaults(run=_convert_vision)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
