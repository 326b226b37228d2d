"""ComfyUI V3 schemas built from the plain node descriptions in `spec`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from comfy_api.latest import io

from .spec import CUSTOM_TYPES, InputSpec, NodeSpec, OutputSpec

_IO_TYPES: dict[str, type] = {
    "COMBO": io.Combo, "INT": io.Int, "FLOAT": io.Float, "STRING": io.String, "BOOLEAN": io.Boolean,
    "IMAGE": io.Image, "CONDITIONING": io.Conditioning,
    **{name: io.Custom(name) for name in CUSTOM_TYPES},
}


def _io_type(name: str) -> type:
    if name not in _IO_TYPES:
        raise KeyError(f"no ComfyUI io type registered for {name!r}; add it to comfy_schema._IO_TYPES")
    return _IO_TYPES[name]


def build_input(spec: InputSpec, live: Mapping[str, Sequence[str]] | None = None) -> io.Input:
    if spec.grow is not None:
        slot = _io_type(spec.type).Input(spec.grow.prefix, tooltip=spec.tooltip)
        template = io.Autogrow.TemplatePrefix(slot, prefix=spec.grow.prefix, min=spec.grow.minimum, max=spec.grow.maximum)
        return io.Autogrow.Input(spec.name, template=template, tooltip=spec.tooltip)
    return _io_type(spec.type).Input(spec.name, **spec.widget_kwargs(live))


def build_output(spec: OutputSpec) -> io.Output:
    return _io_type(spec.type).Output(spec.name, display_name=spec.name, tooltip=spec.tooltip)


def build_schema(spec: NodeSpec, live: Mapping[str, Sequence[str]] | None = None) -> io.Schema:
    """The node's `io.Schema`; `live` holds the option lists read from disk (model files and folders)."""
    return io.Schema(
        node_id=spec.node_id,
        display_name=spec.display_name,
        category=spec.category,
        description=spec.description,
        inputs=[build_input(i, live) for i in spec.inputs],
        outputs=[build_output(o) for o in spec.outputs],
    )
