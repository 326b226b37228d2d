"""How the VLM's weights are held: a plain dtype, or stored quantized (fp8, int8, nf4) and computed in a half dtype.

Qwen2-VL-7B is about 16.6 GB in bf16, more than a 12 or 16 GB card holds next to anything else. Three
quantized precisions make it fit, each through the library transformers integrates for it:

- `fp8`: torchao's `Float8WeightOnlyConfig` (through `TorchAoConfig`): each Linear weight stored as
  float8 e4m3 with one scale per output row, dequantized to the compute dtype inside the matmul. About
  half the bytes. Chosen over optimum-quanto (in maintenance mode) and over a hand-written float8 layer
  (one more thing to keep): torchao is PyTorch's own quantization library, its weight-only path runs on
  any CUDA GPU and on the CPU, and its tensors move with `Module.to`.
- `int8`: torchao's `Int8WeightOnlyConfig`: the same byte per weight and scale per row, as an integer
  (what GGUF's Q8_0 does per block). e4m3 keeps 3 mantissa bits, a step of up to 1/8 of each weight; int8's
  255 even steps across a row give roughly a tenth of its error on bell-shaped weights, so features stay
  closest to bf16's for the same memory.
- `nf4`: bitsandbytes' 4-bit NormalFloat (through `BitsAndBytesConfig`, double-quantized scales):
  about a third of the bytes. bitsandbytes >= 0.49 also runs on the CPU.

Only the language model's Linear layers (its head included) and its input embedding table are quantized.
The table (545 M of Qwen2-VL-7B's 8.3 B weights, read one row per token) is stored as int8 with one scale
per row by torchao's `IntxWeightOnlyConfig` in every quantized precision: float8 weights cover Linear layers
only, and bitsandbytes' `EmbeddingNF4` refuses `state_dict()`, which ComfyUI's model manager calls. The
vision tower and the norms stay in the compute dtype (the vision tower is small and its features feed every
answer). The libraries are optional dependencies, imported only when a quantized precision is asked for.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass

import torch
from packaging.version import Version

from .devices import DTYPES as PLAIN, resolve_dtype

logger = logging.getLogger(__name__)

QUANTIZED = ("fp8", "int8", "nf4")
PRECISIONS = ("auto", *PLAIN, *QUANTIZED)
KEEP_IN_COMPUTE_DTYPE = ("model.visual",)
"""Modules never quantized (transformers matches these prefixes): the vision tower of every Qwen-VL family."""

ROW_BYTES = {"fp8": 4, "int8": 4 + 1}
"""What torchao stores with each output row of a one-byte Linear weight: an fp32 scale, and for int8 an int8 zero
point too (torchao 0.18; 0.15 keeps int8's scale in bf16 alone, 3 bytes a row fewer: a few MB on a 7B model)."""

NF4_TABLES_BYTES = 4 * (16 + 256) + 170
"""What bitsandbytes stores with each nf4 Linear weight whatever its size: the 16-value NF4 code and the 256-value
code of its double-quantized scales (fp32), and about 170 bytes of packed quantization state."""

_FLOORS = {"torchao": "0.15", "bitsandbytes": "0.45"}
"""The oldest versions the precisions work with (transformers 5 refuses torchao < 0.15)."""
_LIBRARIES = {"fp8": ("torchao",), "int8": ("torchao",), "nf4": ("bitsandbytes", "torchao")}
"""The packages each quantized precision imports (every one stores the embedding table through torchao)."""


class MissingDependency(ImportError):
    """An optional package a chosen precision needs is not installed; the message names the pip command."""


@dataclass(frozen=True)
class Precision:
    """`weights`: how the weights are stored (bf16, fp16, fp32, fp8, int8, nf4); `compute`: what the arithmetic runs in."""

    weights: str
    compute: torch.dtype

    def __post_init__(self) -> None:
        if self.weights not in (*PLAIN, *QUANTIZED):
            raise ValueError(f"Unknown weight precision {self.weights!r}; choose one of {', '.join(PRECISIONS)}.")
        if self.weights in PLAIN and PLAIN[self.weights] != self.compute:
            raise ValueError(f"{self.weights} weights compute in {PLAIN[self.weights]}, not {self.compute}.")

    @property
    def quantized(self) -> bool:
        return self.weights in QUANTIZED

    def __str__(self) -> str:
        if not self.quantized:
            return self.weights
        return f"{self.weights} (computed in {str(self.compute).removeprefix('torch.')})"

    def quantization_config(self):
        """The transformers `quantization_config` for these weights (None for a plain dtype)."""
        if not self.quantized:
            return None
        require_library(self.weights)
        if self.weights in ("fp8", "int8"):
            from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig
            from transformers import TorchAoConfig

            config = Float8WeightOnlyConfig() if self.weights == "fp8" else Int8WeightOnlyConfig(version=2)
            return TorchAoConfig(config, modules_to_not_convert=list(KEEP_IN_COMPUTE_DTYPE))
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=self.compute,
            bnb_4bit_use_double_quant=True, llm_int8_skip_modules=list(KEEP_IN_COMPUTE_DTYPE),
        )


def require_library(weights: str) -> None:
    """Import the optional libraries a quantized precision needs, or say which pip command installs them."""
    problems = {}
    for module in _LIBRARIES[weights]:
        try:
            importlib.import_module(module)
            found = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:  # importable without its metadata (a source tree): trust it
            continue
        except ImportError as error:
            problems[module] = str(error)
            continue
        if Version(found) < Version(_FLOORS[module]):
            problems[module] = f"{module} {found} is older than {_FLOORS[module]}"
    if problems:
        names = " and ".join(problems)
        what = f"package {names}, which is" if len(problems) == 1 else f"packages {names}, which are"
        command = " ".join(f'"{module}>={_FLOORS[module]}"' for module in problems)
        raise MissingDependency(
            f"The {weights} precision needs the optional {what} missing or too old here "
            f"({'; '.join(problems.values())}). Install into the Python that runs ThinkDiff: "
            f"pip install -U {command} (then restart), or choose another precision "
            f"({', '.join(p for p in PRECISIONS if p != weights)})."
        )


def half_dtype(device: torch.device) -> torch.dtype:
    """The dtype quantized weights compute in: `devices.resolve_dtype`'s `auto` (bf16 on CUDA, fp16 where bf16 is
    missing and on Apple MPS, fp32 on the CPU, where half-precision matmuls are slow and gain nothing)."""
    return resolve_dtype("auto", device)


@dataclass(frozen=True)
class WeightCensus:
    """Weight counts of a VLM by what a quantized precision does with them."""

    quantizable: int
    """Elements of the language model's Linear weights (head included): stored as fp8, int8 or nf4 when quantized."""
    kept: int
    """Everything else but the embedding table (vision tower, norms, biases): always in the compute dtype."""
    rows: int
    """Output rows of those Linear weights (fp8 and int8 store a scale per row)."""
    tensors: int
    """How many Linear weights those are (nf4 stores its code tables with each)."""
    embedding: int
    """Elements of the input embedding table: int8 in the quantized precisions, else in the compute dtype."""
    embedding_rows: int
    """Its rows, the vocabulary (its int8 storage keeps a scale and a zero point per row)."""

    def bytes(self, precision: Precision) -> int:
        """The weight bytes of this model held in `precision`."""
        size = _element_size(precision.compute)
        kept = self.kept * size
        if not precision.quantized:
            return kept + (self.quantizable + self.embedding) * size
        table = self.embedding + self.embedding_rows * (size + 1)  # int8, a scale and a zero point per row
        if precision.weights in ROW_BYTES:  # one float8 or int8 byte per weight, and its row's scale
            return kept + table + self.quantizable + ROW_BYTES[precision.weights] * self.rows
        # nf4: half a byte a weight, an 8-bit scale per 64, an fp32 one per 256 scales, and the code tables
        blocks = self.quantizable // 64
        return kept + table + self.quantizable // 2 + blocks + 4 * -(-blocks // 256) + self.tensors * NF4_TABLES_BYTES


def census(model: torch.nn.Module) -> WeightCensus:
    """Count `model`'s weights (a meta-device model works: only shapes are read), quantized or not."""
    linears = [(name, module) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and not _kept(name)]
    embedding = model.get_input_embeddings()
    counted = {id(module.weight) for _, module in linears} | {id(embedding.weight)}
    return WeightCensus(quantizable=sum(module.in_features * module.out_features for _, module in linears),
                        kept=sum(p.numel() for p in model.parameters() if id(p) not in counted),
                        rows=sum(module.out_features for _, module in linears), tensors=len(linears),
                        embedding=embedding.num_embeddings * embedding.embedding_dim,
                        embedding_rows=embedding.num_embeddings)


def quantize_embedding(model: torch.nn.Module, precision: Precision) -> None:
    """In a quantized precision, store `model`'s input embedding table as int8 with one scale per row (see the
    module docstring), on the device it is on; plain precisions keep it as loaded."""
    if not precision.quantized:
        return
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    embedding = model.get_input_embeddings()
    quantize_(embedding, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
              filter_fn=lambda module, name: module is embedding)


def folder_census(folder, trust_remote_code: bool = False) -> WeightCensus:
    """The census of a model folder's VLM, built on the meta device from its config (nothing is read or allocated)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return census(AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code))


def _kept(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in KEEP_IN_COMPUTE_DTYPE)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor really holds: a torchao tensor's inner data and scales, a bitsandbytes 4-bit weight's
    packed data and quantization state (its `.dtype`/`.numel()` describe the unquantized weight or the packing)."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    total = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)
    if state is not None:
        total += sum(v.numel() * v.element_size() for v in state.as_dict(packed=True).values() if isinstance(v, torch.Tensor))
    return total


def weight_bytes(model: torch.nn.Module) -> int:
    """The bytes `model`'s parameters and buffers occupy, whatever their storage (what moving it costs)."""
    return sum(tensor_bytes(t) for t in (*model.parameters(), *model.buffers()))


def resolve_precision(name: str | torch.dtype | Precision, device: torch.device,
                      census_of: WeightCensus | None = None, working_bytes: int = 0,
                      device_bytes: int | None = None) -> Precision:
    """The precision `name` asks for on `device`.

    `auto` on CUDA: the device's half dtype if the weights in it plus `working_bytes` fit `device_bytes`
    (default: the card's total memory), else fp8; elsewhere bf16/fp16/fp32 as the device prefers (no card
    to fit). `auto` needs `census_of` on CUDA and logs what it chose.
    """
    if isinstance(name, Precision):
        return name
    if isinstance(name, torch.dtype):
        plain = {dtype: key for key, dtype in PLAIN.items()}
        if name not in plain:
            raise ValueError(f"{name} is not a VLM compute dtype; choose one of {', '.join(PLAIN)}.")
        return Precision(plain[name], name)
    if name in PLAIN:
        return Precision(name, PLAIN[name])
    if name in QUANTIZED:
        return Precision(name, half_dtype(device))
    if name != "auto":
        raise ValueError(f"Unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}.")
    compute = half_dtype(device)
    plain = Precision({v: k for k, v in PLAIN.items()}[compute], compute)
    if device.type != "cuda":
        logger.info("ThinkDiff: precision auto on %s: %s", device, plain)
        return plain
    if census_of is None:
        raise ValueError("precision auto on a GPU needs the model's weight census to decide whether it fits.")
    if device_bytes is None:
        device_bytes = torch.cuda.get_device_properties(device).total_memory
    return auto_precision(compute, census_of, working_bytes, device_bytes)


def auto_precision(compute: torch.dtype, census_of: WeightCensus, working_bytes: int, device_bytes: int) -> Precision:
    """`auto` on a card of `device_bytes`: plain `compute` weights if they and `working_bytes` fit, else fp8 (logged)."""
    plain = Precision({v: k for k, v in PLAIN.items()}[compute], compute)
    need = census_of.bytes(plain) + working_bytes
    chosen = plain if need <= device_bytes else Precision("fp8", compute)
    logger.info("ThinkDiff: precision auto chose %s: %s weights + %s working memory %s the card's %s", chosen,
                gib(census_of.bytes(plain)), gib(working_bytes), "fit" if chosen is plain else "exceed", gib(device_bytes))
    return chosen


def gib(size: int | float) -> str:
    return f"{size / 2**30:.1f} GiB"
