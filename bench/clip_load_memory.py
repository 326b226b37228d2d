"""Peak resident memory of loading the ThinkDiff-CLIP vision tower, vs the vision tensors' own size.

Writes a BLIP-2-like folder whose shards also hold a language model several times the tower's size
(vision and language tensors share a shard), then measures, each in a fresh subprocess: peak RSS above
the post-import baseline after loading with `VisionEncoder` and touching every weight (so each is
resident), from the folder and from a converted vision-only file, as stored (fp32) and cast to bf16 (the
reference's dtype); and, for comparison, loading the whole `Blip2ForConditionalGeneration` and keeping its
vision model. Ratios are over the vision tensors' stored (fp32) size. Target: folder load <= 1.2x.
Run from the repo root: `python bench/clip_load_memory.py`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MIB = 2**20


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss() -> int:
    """Resident bytes now (Linux /proc); falls back to the peak so far elsewhere."""
    return _proc_status_bytes("VmRSS") or peak_rss()


def peak_rss() -> int:
    """This process's peak resident bytes. Linux: VmHWM, because `ru_maxrss` carries over the peak of the
    parent that forked us (exec keeps it), which would hide what this process did."""
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure(how: str, path: str, dtype: str) -> None:
    """In this fresh process: import everything, note RSS, load, touch every weight, report the peak."""
    import torch
    from transformers import Blip2ForConditionalGeneration

    from thinkdiff_core.processors import blip_pil_image_processor
    from thinkdiff_core.vision import VisionEncoder
    from thinkdiff_core.vision_files import BLIP2_EVAL_PROCESSOR

    torch.set_num_threads(1)
    blip_pil_image_processor(BLIP2_EVAL_PROCESSOR)  # imports that loading triggers lazily are not loading's cost
    torch.ones(4).sum()
    baseline = current_rss()
    if how == "full_model":
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        model = Blip2ForConditionalGeneration.from_pretrained(path, dtype=torch_dtype).vision_model
    else:
        model = VisionEncoder.from_pretrained(path, dtype=dtype, device="cpu").model
    checksum = sum(float(p.sum()) for p in model.parameters())  # float32 sums: no temporary copies
    print(json.dumps({"peak_delta": peak_rss() - baseline, "checksum": checksum}))


def run_measure(how: str, path: Path, dtype: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", how, str(path), dtype], capture_output=True,
                            text=True, cwd=REPO, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", nargs=3, metavar=("HOW", "PATH", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--vision-width", type=int, default=768)
    parser.add_argument("--vision-layers", type=int, default=8)
    parser.add_argument("--text-width", type=int, default=1024)
    parser.add_argument("--text-layers", type=int, default=4)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure)
        return

    from safetensors import safe_open

    from thinkdiff_core.testing.tiny import write_tiny_blip2
    from thinkdiff_core.vision_files import convert_blip2_vision

    with tempfile.TemporaryDirectory() as root:
        folder = write_tiny_blip2(Path(root) / "blip2", vision_width=args.vision_width, vision_layers=args.vision_layers,
                                  text_width=args.text_width, text_layers=args.text_layers, text_vocab_size=32128)
        sizes = {"vision_model.": 0, "language_model.": 0}
        for shard in folder.glob("*.safetensors"):
            with safe_open(str(shard), framework="pt") as handle:
                for name in handle.keys():
                    tensor_slice = handle.get_slice(name)
                    count = 1
                    for dim in tensor_slice.get_shape():
                        count *= dim
                    for prefix in sizes:
                        sizes[prefix] += count * 4 if name.startswith(prefix) else 0
        converted = convert_blip2_vision(folder, Path(root) / "blip2_vision.safetensors")
        cases = [("folder", folder, "fp32"), ("converted_file", converted, "fp32"), ("full_model", folder, "fp32"),
                 ("folder_as_bf16", folder, "bf16"), ("full_model_as_bf16", folder, "bf16")]
        results = {name: run_measure(name.removesuffix("_as_bf16"), path, dtype) for name, path, dtype in cases}
    for dtype in ("fp32", "bf16"):
        sums = {round(results[name]["checksum"], 1) for name, _, d in cases if d == dtype}
        if len(sums) != 1:
            raise SystemExit(f"the {dtype} loads disagree on the weights: {results}")
    vision = sizes["vision_model."]
    print(f"vision_tensors_fp32_mib: {vision / MIB:.1f}")
    print(f"language_model_tensors_fp32_mib: {sizes['language_model.'] / MIB:.1f}")
    for name, result in results.items():
        print(f"clip_load_{name}_peak_rss_mib: {result['peak_delta'] / MIB:.1f}")
    for name, result in results.items():
        print(f"clip_load_{name}_peak_ratio: {result['peak_delta'] / vision:.2f}")


if __name__ == "__main__":
    main()
