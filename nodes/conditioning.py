"""Aligner loading and the conditioning it makes: shared by every ThinkDiff token source (VLM, vision encoder)."""

from __future__ import annotations

from comfy_api.latest import io

from ..thinkdiff_core import LoadedAligner, ThinkDiffTokens, load_aligner
from . import spec
from .comfy_models import ManagedModel, aligner_path, list_aligner_files
from .comfy_schema import build_schema
from .operations import condition


class ThinkDiffAlignerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(spec.ALIGNER_LOADER, live={spec.ALIGNER_FILES: list_aligner_files()})

    @classmethod
    def execute(cls, aligner_name: str) -> io.NodeOutput:
        aligner = load_aligner(aligner_path(aligner_name))
        return io.NodeOutput(ManagedModel(aligner, aligner.module))


class ThinkDiffConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(spec.CONDITIONING)

    @classmethod
    def execute(cls, aligner: ManagedModel[LoadedAligner], tokens: ThinkDiffTokens, conditioning: list,
                mode: str) -> io.NodeOutput:
        aligner.wrapped.check_tokens(tokens)  # refuse a size mismatch before moving any weights
        return io.NodeOutput(condition(aligner.ready(), tokens, conditioning, mode))
