"""The ThinkDiff nodes described as plain data: ids, names, categories, inputs, outputs and tooltips.

`comfy_schema.build_schema` turns each `NodeSpec` into a ComfyUI `io.Schema`; the default test suite
reads the same description to check the shipped workflows' widget values without importing ComfyUI.
Adding a node (e.g. the ThinkDiff-CLIP vision encoder) is one more `NodeSpec` here plus a node class
whose `execute` calls the library.

Defaults and choices come from `thinkdiff_core` (generation settings, presets, merge modes, dtypes,
aligner file types), so the nodes cannot drift from the library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..thinkdiff_core import MODES, PRESETS, GenerationSettings
from ..thinkdiff_core.checkpoint import OFFICIAL_SUFFIXES, SAFETENSORS_SUFFIXES
from ..thinkdiff_core.vlm import DTYPES

VLM_TYPE = "THINKDIFF_VLM"
ALIGNER_TYPE = "THINKDIFF_ALIGNER"
TOKENS_TYPE = "THINKDIFF_TOKENS"
CUSTOM_TYPES = (VLM_TYPE, ALIGNER_TYPE, TOKENS_TYPE)
"""Our own socket types: only our nodes produce and read them."""

WIDGET_TYPES = ("COMBO", "INT", "FLOAT", "STRING", "BOOLEAN")
CONTROL_AFTER_GENERATE = ("fixed", "increment", "decrement", "randomize")
"""What the editor stores after a widget with `control_after_generate` (its own extra widget value)."""

VLM_FOLDER_KEYS = ("vlm", "LLM")
"""ComfyUI model-folder keys (models/vlm/, models/LLM/, and extra_model_paths.yaml entries) searched for VLMs."""
ALIGNER_FOLDER_KEY = "thinkdiff"
ALIGNER_SUFFIXES = SAFETENSORS_SUFFIXES + OFFICIAL_SUFFIXES

VLM_FOLDERS = "vlm_folders"
ALIGNER_FILES = "aligner_files"
"""Names of option lists read from disk when ComfyUI asks for a schema (what a loader offers)."""

CATEGORY_LOADERS = "loaders/thinkdiff"
CATEGORY_CONDITIONING = "conditioning/thinkdiff"


@dataclass(frozen=True)
class Grow:
    """A growing list of sockets (ComfyUI Autogrow): connecting the last slot adds the next one.

    The slots are named `<prefix>0`, `<prefix>1`, ...; the first `minimum` must be connected.
    """

    prefix: str
    minimum: int
    maximum: int

    def slot_names(self) -> list[str]:
        return [f"{self.prefix}{index}" for index in range(self.maximum)]


@dataclass(frozen=True)
class InputSpec:
    """One input: a widget (COMBO, INT, FLOAT, STRING, BOOLEAN) or a socket of any other type."""

    name: str
    type: str
    tooltip: str
    display_name: str | None = None
    default: Any = None
    options: tuple[str, ...] = ()
    live_options: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    multiline: bool = False
    placeholder: str | None = None
    control_after_generate: bool = False
    optional: bool = False
    grow: Grow | None = None

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and self.grow is None

    def socket_names(self) -> list[str]:
        """Names this input's sockets have in a workflow (`images.image0`... for a growing list)."""
        if self.grow is None:
            return [self.name]
        return [f"{self.name}.{slot}" for slot in self.grow.slot_names()]

    def options_now(self, live: Mapping[str, Sequence[str]] | None = None) -> list[str] | None:
        """The combo's choices: fixed ones, or the live list (None when that list is not known here)."""
        if self.live_options is None:
            return list(self.options)
        if live is None or self.live_options not in live:
            return None
        return list(live[self.live_options])

    def widget_kwargs(self, live: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """Keyword arguments for ComfyUI's `io.<Type>.Input(name, **kwargs)` (only those that are set)."""
        values: dict[str, Any] = {"tooltip": self.tooltip, "display_name": self.display_name,
                                  "optional": self.optional or None}
        if self.type == "COMBO":
            values.update(options=self.options_now(live) or [], default=self.default)
        elif self.type in ("INT", "FLOAT"):
            values.update(default=self.default, min=self.minimum, max=self.maximum, step=self.step)
            if self.type == "INT":
                values["control_after_generate"] = self.control_after_generate or None
        elif self.type == "STRING":
            values.update(default=self.default, multiline=self.multiline or None, placeholder=self.placeholder)
        elif self.type == "BOOLEAN":
            values["default"] = self.default
        return {key: value for key, value in values.items() if value is not None}

    def check_value(self, value: Any, live: Mapping[str, Sequence[str]] | None = None) -> str | None:
        """Why `value` is not a valid value of this widget (None when it is)."""
        if self.type == "COMBO":
            choices = self.options_now(live)
            if choices is not None:
                return None if value in choices else f"{value!r} is not one of {choices}"
            if not isinstance(value, str) or not value:
                return f"{value!r} is not a file or folder name"
            if self.live_options == ALIGNER_FILES and not value.lower().endswith(ALIGNER_SUFFIXES):
                return f"{value!r} is not an aligner file ({', '.join(ALIGNER_SUFFIXES)})"
            return None
        if self.type == "BOOLEAN":
            return None if isinstance(value, bool) else f"{value!r} is not true/false"
        if self.type == "STRING":
            return None if isinstance(value, str) else f"{value!r} is not text"
        wanted = int if self.type == "INT" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            return f"{value!r} is not {'an integer' if self.type == 'INT' else 'a number'}"
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return f"{value!r} is outside [{self.minimum}, {self.maximum}]"
        return None


@dataclass(frozen=True)
class OutputSpec:
    type: str
    name: str
    tooltip: str


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    category: str
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...] = field(default_factory=tuple)

    @property
    def widgets(self) -> list[InputSpec]:
        """Widget inputs in the order the editor stores their values (required before optional)."""
        ordered = [i for i in self.inputs if not i.optional] + [i for i in self.inputs if i.optional]
        return [i for i in ordered if i.is_widget]

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.node_id} has no input {name!r}")

    def socket_names(self) -> list[str]:
        """Every name a link may target: sockets, growing-list slots, and widgets turned into sockets."""
        return [name for spec in self.inputs for name in spec.socket_names()]

    def widget_layout(self) -> list[tuple[InputSpec, bool]]:
        """(input, is_control_value) for each entry of an editor-format `widgets_values` list."""
        layout = []
        for spec in self.widgets:
            layout.append((spec, False))
            if spec.control_after_generate:
                layout.append((spec, True))
        return layout

    def check_widgets_values(self, values: Sequence[Any], live: Mapping[str, Sequence[str]] | None = None) -> list[str]:
        """Problems with an editor-format `widgets_values` list for this node (empty when it fits)."""
        layout = self.widget_layout()
        if len(values) != len(layout):
            names = [spec.name + (" (control)" if control else "") for spec, control in layout]
            return [f"{self.node_id}: {len(values)} widget values, the schema has {len(layout)}: {names}"]
        problems = []
        for (spec, control), value in zip(layout, values):
            if control:
                problem = None if value in CONTROL_AFTER_GENERATE else f"{value!r} is not one of {CONTROL_AFTER_GENERATE}"
            else:
                problem = spec.check_value(value, live)
            if problem:
                problems.append(f"{self.node_id}.{spec.name}{' (control after generate)' if control else ''}: {problem}")
        return problems

    def widget_inputs(self, values: Sequence[Any]) -> dict[str, Any]:
        """The prompt inputs an editor-format `widgets_values` list stands for (control values dropped)."""
        return {spec.name: value for (spec, control), value in zip(self.widget_layout(), values) if not control}


_SETTINGS = GenerationSettings()

VLM_LOADER = NodeSpec(
    node_id="ThinkDiffVLMLoader",
    display_name="Load ThinkDiff VLM",
    category=CATEGORY_LOADERS,
    description=(
        "Loads a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model folder (Hugging Face layout, with config.json) from "
        "models/vlm/ or models/LLM/. ComfyUI's memory manager holds it: it moves to the GPU when the Reason "
        "node runs and is offloaded when another model needs the room."
    ),
    inputs=(
        InputSpec("model", "COMBO", live_options=VLM_FOLDERS, tooltip=(
            "A model folder under models/vlm/ or models/LLM/ (or a path extra_model_paths.yaml gives for 'vlm' or "
            "'LLM'), e.g. Qwen2-VL-7B-Instruct, the VLM the official ThinkDiff-LVLM aligner was trained on.")),
        InputSpec("dtype", "COMBO", options=("auto", *DTYPES), default="auto", tooltip=(
            "Weight precision. auto: bf16 on CUDA (fp16 if the GPU lacks bf16), fp16 on Apple MPS, fp32 on the CPU.")),
        InputSpec("trust_remote_code", "BOOLEAN", default=False, tooltip=(
            "Run Python code shipped inside the model folder. Off: only transformers' own Qwen-VL code runs. "
            "Switch on only for a folder whose code you trust.")),
    ),
    outputs=(OutputSpec(VLM_TYPE, "vlm", "The loaded VLM, for the ThinkDiff Reason node."),),
)

ALIGNER_LOADER = NodeSpec(
    node_id="ThinkDiffAlignerLoader",
    display_name="Load ThinkDiff Aligner",
    category=CATEGORY_LOADERS,
    description=(
        "Loads a ThinkDiff aligner from models/thinkdiff/: the official thinkdiff_lvlm.pth (read as weights only, "
        "never unpickled otherwise) or a .safetensors file written by this pack. The aligner maps the VLM's "
        "features into the T5 space FLUX reads its prompt from."
    ),
    inputs=(
        InputSpec("aligner_name", "COMBO", live_options=ALIGNER_FILES, tooltip=(
            "An aligner file under models/thinkdiff/: thinkdiff_lvlm.pth (official, for Qwen2-VL-7B-Instruct) or "
            "a .safetensors aligner.")),
    ),
    outputs=(OutputSpec(ALIGNER_TYPE, "aligner", "The aligner, for the ThinkDiff Conditioning node."),),
)

REASON = NodeSpec(
    node_id="ThinkDiffReason",
    display_name="ThinkDiff Reason (VLM)",
    category=CATEGORY_CONDITIONING,
    description=(
        "The VLM reads the images and words and writes its answer; the features of the tokens it writes are "
        "what the aligner turns into FLUX conditioning. With a fixed seed ComfyUI reuses the result instead of "
        "running the VLM again."
    ),
    inputs=(
        InputSpec("vlm", VLM_TYPE, tooltip="The VLM from Load ThinkDiff VLM."),
        InputSpec("images", "IMAGE", grow=Grow(prefix="image", minimum=1, maximum=16), tooltip=(
            "The pictures, in order; connecting the last slot adds another. A batch counts as that many pictures.")),
        InputSpec("words", "STRING", default="", multiline=True,
                  placeholder="one word per line: a word for each picture, then the word to reason about",
                  tooltip=(
                      "One per line. cobsat_reasoning: a word for each picture, then the query word (3 lines for "
                      "2 pictures). compose/custom: nothing, a label per picture, or a label per picture plus a "
                      "final request.")),
        InputSpec("preset", "COMBO", options=PRESETS, default=PRESETS[0], tooltip=(
            "The instruction given to the VLM. cobsat_reasoning: the ThinkDiff paper's in-context reasoning prompt "
            "(what comes next after these word/picture pairs). compose: describe one picture that combines them. "
            "custom: your own instruction below.")),
        InputSpec("custom_instruction", "STRING", default="", multiline=True,
                  placeholder="used by the custom preset only",
                  tooltip="The instruction for the custom preset, placed before the pictures and words."),
        InputSpec("seed", "INT", default=_SETTINGS.seed, minimum=0, maximum=0xFFFFFFFFFFFFFFFF,
                  control_after_generate=True, tooltip=(
                      "Sampling seed. Keep it fixed to get the same text again and let ComfyUI skip the VLM on re-runs.")),
        InputSpec("temperature", "FLOAT", default=_SETTINGS.temperature, minimum=0.0, maximum=2.0, step=0.05, tooltip=(
            "Sampling temperature (the paper uses 0.6); 0 picks the most likely token every time.")),
        InputSpec("top_p", "FLOAT", default=_SETTINGS.top_p, minimum=0.01, maximum=1.0, step=0.01, tooltip=(
            "Nucleus sampling: sample among the most likely tokens that make up this probability (the paper uses 0.9).")),
        InputSpec("max_new_tokens", "INT", default=_SETTINGS.max_new_tokens, minimum=1, maximum=4096, tooltip=(
            "How many tokens the VLM may write; each becomes one FLUX prompt token (the paper uses 128).")),
        InputSpec("min_new_tokens", "INT", default=_SETTINGS.min_new_tokens, minimum=0, maximum=4096, tooltip=(
            "Tokens written before the VLM may stop. The paper uses min = max = 128, so FLUX always gets 128 tokens.")),
    ),
    outputs=(
        OutputSpec(TOKENS_TYPE, "tokens", "Features of the tokens the VLM wrote, for the ThinkDiff Conditioning node."),
        OutputSpec("STRING", "text", "The VLM's answer as text (also shown on this node)."),
    ),
)

CONDITIONING = NodeSpec(
    node_id="ThinkDiffConditioning",
    display_name="ThinkDiff Conditioning",
    category=CATEGORY_CONDITIONING,
    description=(
        "Turns ThinkDiff tokens into FLUX conditioning with the aligner, merged into a base conditioning from your "
        "usual FLUX text encoder, whose pooled vector and guidance are kept."
    ),
    inputs=(
        InputSpec("aligner", ALIGNER_TYPE, tooltip="The aligner from Load ThinkDiff Aligner, trained for the tokens' source model."),
        InputSpec("tokens", TOKENS_TYPE, tooltip="Tokens from ThinkDiff Reason."),
        InputSpec("conditioning", "CONDITIONING", tooltip=(
            "Base FLUX conditioning (CLIPTextEncode with a FLUX DualCLIPLoader, FluxGuidance, ...). Use an empty "
            "prompt for the reference recipe: its pooled CLIP-L vector and guidance are kept.")),
        InputSpec("mode", "COMBO", options=MODES, default=MODES[0], tooltip=(
            "replace: the aligned tokens are the whole prompt (the ThinkDiff-LVLM recipe). prepend / append: put "
            "them before / after the base prompt's own T5 tokens.")),
    ),
    outputs=(OutputSpec("CONDITIONING", "conditioning", "FLUX conditioning for any sampler."),),
)

ALL_NODES = (VLM_LOADER, ALIGNER_LOADER, REASON, CONDITIONING)
NODES_BY_ID = {spec.node_id: spec for spec in ALL_NODES}
