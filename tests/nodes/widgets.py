"""A test-side table of our nodes' widgets and sockets, for checking the shipped workflows without ComfyUI.

The editor stores a node's widget values as a positional list (`widgets_values`), so the default suite needs
each node's widgets in order. The real-ComfyUI suite (tests/comfyui/) checks this table against the
server's `/object_info`, which proves it equals the node schemas in nodes/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from thinkdiff_core import MODES, PRESETS, TARGETS, GenerationSettings
from thinkdiff_core.checkpoint import OFFICIAL_SUFFIXES, SAFETENSORS_SUFFIXES
from thinkdiff_core.precision import PRECISIONS
from thinkdiff_core.devices import DTYPES

CONTROL_AFTER_GENERATE = ("fixed", "increment", "decrement", "randomize")
"""What the editor stores after a widget with `control_after_generate` (its own extra widget value)."""
ALIGNER_SUFFIXES = SAFETENSORS_SUFFIXES + OFFICIAL_SUFFIXES
MAX_IMAGES = 16


@dataclass(frozen=True)
class Widget:
    """One widget; `options` None for a combo listed from disk, whose `files` say what names it takes."""

    name: str
    kind: str
    default: Any = None
    options: tuple[str, ...] | None = ()
    files: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    control_after_generate: bool = False
    multiline: bool = False

    def check_value(self, value: Any) -> str | None:
        """Why `value` is not a valid value of this widget (None when it is)."""
        if self.kind == "COMBO":
            if self.options is not None:
                return None if value in self.options else f"{value!r} is not one of {list(self.options)}"
            if not isinstance(value, str) or not value:
                return f"{value!r} is not a file or folder name"
            if self.files == "aligner" and not value.lower().endswith(ALIGNER_SUFFIXES):
                return f"{value!r} is not an aligner file ({', '.join(ALIGNER_SUFFIXES)})"
            if self.files == "vision" and value.lower().endswith(OFFICIAL_SUFFIXES):
                return f"{value!r} is not a vision tower (a BLIP-2 folder or a converted .safetensors file)"
            return None
        if self.kind == "BOOLEAN":
            return None if isinstance(value, bool) else f"{value!r} is not true/false"
        if self.kind == "STRING":
            return None if isinstance(value, str) else f"{value!r} is not text"
        wanted = int if self.kind == "INT" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            return f"{value!r} is not {'an integer' if self.kind == 'INT' else 'a number'}"
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return f"{value!r} is outside [{self.minimum}, {self.maximum}]"
        return None


@dataclass(frozen=True)
class Node:
    """A node's sockets (`required` must be linked, `grows` are Autogrow lists) and widgets, in schema order."""

    node_id: str
    widgets: tuple[Widget, ...]
    outputs: tuple[str, ...]
    required: tuple[str, ...] = ()
    grows: tuple[str, ...] = ()

    def widget(self, name: str) -> Widget:
        return next(widget for widget in self.widgets if widget.name == name)

    def socket_names(self) -> list[str]:
        """Every name a link may target: sockets, growing-list slots, and widgets turned into sockets."""
        slots = [f"{grow}.image{index}" for grow in self.grows for index in range(MAX_IMAGES)]
        return [*self.required, *slots, *(widget.name for widget in self.widgets)]

    def widget_layout(self) -> list[tuple[Widget, bool]]:
        """(widget, is_control_value) for each entry of an editor-format `widgets_values` list."""
        layout = []
        for widget in self.widgets:
            layout.append((widget, False))
            if widget.control_after_generate:
                layout.append((widget, True))
        return layout

    def check_widgets_values(self, values: Sequence[Any]) -> list[str]:
        """Problems with an editor-format `widgets_values` list for this node (empty when it fits)."""
        layout = self.widget_layout()
        if len(values) != len(layout):
            names = [widget.name + (" (control)" if control else "") for widget, control in layout]
            return [f"{self.node_id}: {len(values)} widget values, the schema has {len(layout)}: {names}"]
        problems = []
        for (widget, control), value in zip(layout, values):
            if control:
                problem = None if value in CONTROL_AFTER_GENERATE else f"{value!r} is not one of {CONTROL_AFTER_GENERATE}"
            else:
                problem = widget.check_value(value)
            if problem:
                problems.append(f"{self.node_id}.{widget.name}{' (control after generate)' if control else ''}: {problem}")
        return problems

    def widget_inputs(self, values: Sequence[Any]) -> dict[str, Any]:
        """The prompt inputs an editor-format `widgets_values` list stands for (control values dropped)."""
        return {widget.name: value for (widget, control), value in zip(self.widget_layout(), values) if not control}


_SETTINGS = GenerationSettings()
_DTYPE = Widget("dtype", "COMBO", default="auto", options=("auto", *DTYPES))

NODES = {node.node_id: node for node in (
    Node("ThinkDiffVLMLoader", outputs=("THINKDIFF_VLM",), widgets=(
        Widget("model", "COMBO", options=None, files="folder"),
        Widget("dtype", "COMBO", default="auto", options=PRECISIONS),
        Widget("trust_remote_code", "BOOLEAN", default=False),
        Widget("device", "COMBO", default="default",
               options=("default", "cpu", *(f"cuda:{index}" for index in range(torch.cuda.device_count())))),
    )),
    Node("ThinkDiffAlignerLoader", outputs=("THINKDIFF_ALIGNER",), widgets=(
        Widget("aligner_name", "COMBO", options=None, files="aligner"),
    )),
    Node("ThinkDiffReason", outputs=("THINKDIFF_TOKENS", "STRING"), required=("vlm",), grows=("images",), widgets=(
        Widget("words", "STRING", default="", multiline=True),
        Widget("preset", "COMBO", default=PRESETS[0], options=PRESETS),
        Widget("custom_instruction", "STRING", default="", multiline=True),
        Widget("seed", "INT", default=_SETTINGS.seed, minimum=0, maximum=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        Widget("temperature", "FLOAT", default=_SETTINGS.temperature, minimum=0.0, maximum=2.0, step=0.05),
        Widget("top_p", "FLOAT", default=_SETTINGS.top_p, minimum=0.01, maximum=1.0, step=0.01),
        Widget("max_new_tokens", "INT", default=_SETTINGS.max_new_tokens, minimum=1, maximum=4096),
        Widget("min_new_tokens", "INT", default=_SETTINGS.min_new_tokens, minimum=0, maximum=4096),
        Widget("max_pixels", "INT", default=0, minimum=0, maximum=64_000_000, step=1024),
    )),
    Node("ThinkDiffConditioning", outputs=("CONDITIONING",), required=("aligner", "tokens", "conditioning"), widgets=(
        Widget("mode", "COMBO", default=MODES[0], options=MODES),
        Widget("target", "COMBO", default="auto", options=tuple(TARGETS)),
        Widget("strength", "FLOAT", default=1.0, minimum=0.0, maximum=10.0, step=0.01),
        Widget("token_budget", "INT", default=0, minimum=0, maximum=4096),
        Widget("allow_other_vlm", "BOOLEAN", default=False),
    )),
    Node("ThinkDiffVisionLoader", outputs=("THINKDIFF_VISION",), widgets=(
        Widget("model", "COMBO", options=None, files="vision"),
        _DTYPE,
    )),
    Node("ThinkDiffVisionEncode", outputs=("THINKDIFF_TOKENS",), required=("vision",), grows=("images",), widgets=()),
)}
"""Our six nodes, by id."""
