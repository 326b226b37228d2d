"""Converters: `python -m thinkdiff_core.convert aligner SRC.pth DST.safetensors [--overwrite]`.

An official ThinkDiff `.pth` (read with `weights_only=True`) becomes our `.safetensors` with the same
tensors and provenance metadata. Existing files are never replaced unless `--overwrite` is given.
"""

from __future__ import annotations

import argparse
import sys

from .checkpoint import convert_official, load_aligner


def _convert_aligner(args: argparse.Namespace) -> None:
    written = convert_official(args.source, args.destination, overwrite=args.overwrite)
    info = load_aligner(written).info
    print(f"wrote {written} ({info.variant}, source {info.source_model_id}, recipe {info.token_recipe})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m thinkdiff_core.convert", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    aligner = commands.add_parser("aligner", help="official .pth aligner -> our .safetensors")
    aligner.add_argument("source", help="official checkpoint, e.g. thinkdiff_lvlm.pth")
    aligner.add_argument("destination", help="output .safetensors path")
    aligner.add_argument("--overwrite", action="store_true", help="replace the destination if it exists")
    aligner.set_defaults(run=_convert_aligner)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
