"""Which VLM precisions run ThinkDiff-LVLM next to FLUX.1-dev on 12, 16 and 24 GB cards, through a real ComfyUI.

The reasoning workflow (VLM loader -> Reason -> Conditioning -> FLUX -> VAE) runs in a real ComfyUI server
with real-size random weights written here (nothing downloaded): Qwen2-VL-7B's shapes for the VLM, a
FLUX.1-dev-shaped transformer stored in fp8 (19 double, 38 single blocks), the official aligner's
3584 -> 4096 layout, TAEF1 for the VAE. A smaller card is emulated on a big one: ComfyUI plans with
`--reserve-vram` (the card's missing gigabytes) and torch enforces the card's size
(`set_per_process_memory_fraction`, set by a bench-only custom node as ComfyUI starts). Two probe nodes
record the peak GPU memory of the VLM stage and of the FLUX stage. Rows per card and precision: whether it
completed (`ok`), was refused up front with the precision that would fit (`refused`), or ran out of memory
(`oom`), and the two peaks.

    python bench/comfy_cards.py --comfyui-dir /path/to/ComfyUI             # a GPU (~5 minutes)
    python bench/comfy_cards.py --comfyui-dir /path/to/ComfyUI --smoke     # CPU: tiny models, the same path
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "comfyui"), str(REPO / "bench")]

from harness import ComfyServer  # noqa: E402
from stand_ins import STAND_IN_NODE_ID, flux_shapes, write_stand_in_node, write_taef1, write_tiny_flux  # noqa: E402
from vlm_precision import PRECISIONS, write_random_qwen2_vl_7b  # noqa: E402

from tests.tiny_files import write_official_aligner  # noqa: E402
from thinkdiff_core.testing.tiny import write_tiny_qwen_vl  # noqa: E402

PACK_FOLDER = "ComfyUI-ThinkDiff"

PROBE_NODE = '''"""Bench-only (bench/comfy_cards.py): cap this process at the emulated card's size; probe stage peaks."""
import os

import torch

CARD_GB = float(os.environ.get("THINKDIFF_CARD_GB", "0"))
if CARD_GB and torch.cuda.is_available():
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, CARD_GB * 2**30 / total))


def _peak():
    if not torch.cuda.is_available():
        return "n/a"
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return f"{peak:.2f}"


def _probe(kind):
    class Probe:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": (kind,)}}

        RETURN_TYPES = (kind,)
        FUNCTION = "probe"
        CATEGORY = "testing"
        OUTPUT_NODE = True

        def probe(self, value):
            return {"ui": {"text": [_peak()]}, "result": (value,)}

    return Probe


NODE_CLASS_MAPPINGS = {"ThinkDiffBenchPeakTokens": _probe("THINKDIFF_TOKENS"), "ThinkDiffBenchPeakLatent": _probe("LATENT")}
'''


def reasoning_prompt(precision: str, size: int, steps: int, pictures: tuple[str, str]) -> dict:
    """The shipped reasoning workflow in API form, with the stand-in base text encoding and the two probes."""
    return {
        "vlm": {"class_type": "ThinkDiffVLMLoader", "inputs": {
            "model": "Qwen2-VL-7B-Instruct", "dtype": precision, "trust_remote_code": False, "device": "default"}},
        "a": {"class_type": "LoadImage", "inputs": {"image": pictures[0]}},
        "b": {"class_type": "LoadImage", "inputs": {"image": pictures[1]}},
        "reason": {"class_type": "ThinkDiffReason", "inputs": {
            "vlm": ["vlm", 0], "images.image0": ["a", 0], "images.image1": ["b", 0], "words": "red\ngreen\nyellow",
            "preset": "cobsat_reasoning", "custom_instruction": "", "seed": 0, "temperature": 0.6, "top_p": 0.9,
            "max_new_tokens": 128, "min_new_tokens": 128, "max_pixels": 0}},
        "vlm_peak": {"class_type": "ThinkDiffBenchPeakTokens", "inputs": {"value": ["reason", 0]}},
        "aligner": {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": "thinkdiff_lvlm.pth"}},
        "empty": {"class_type": STAND_IN_NODE_ID, "inputs": {"text": "", "width": 4096}},
        "guidance": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["empty", 0], "guidance": 3.5}},
        "cond": {"class_type": "ThinkDiffConditioning", "inputs": {
            "aligner": ["aligner", 0], "tokens": ["vlm_peak", 0], "conditioning": ["guidance", 0], "mode": "replace",
            "allow_other_vlm": False}},
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["cond", 0], "negative": ["empty", 0], "latent_image": ["latent", 0],
            "seed": 0, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "flux_peak": {"class_type": "ThinkDiffBenchPeakLatent", "inputs": {"value": ["sample", 0]}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "taef1"}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["flux_peak", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": f"cards-{precision}"}},
    }


def write_flux_fp8(path: Path, device: str) -> Path:
    """A FLUX.1-dev-shaped transformer (19 double, 38 single blocks, 11.9 B weights) in fp8 e4m3, random."""
    generator = torch.Generator(device).manual_seed(0)
    tensors = {}
    for name, shape in flux_shapes(4096, double_blocks=19, single_blocks=38).items():
        if name.endswith(".scale"):
            tensor = torch.ones(shape, device=device)
        elif name.endswith(".bias"):
            tensor = torch.zeros(shape, device=device)
        else:
            tensor = torch.randn(shape, generator=generator, device=device) / max(1, shape[-1]) ** 0.5
        tensors[name] = tensor.to(torch.float8_e4m3fn if len(shape) == 2 else torch.bfloat16).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_models(base: Path, smoke: bool) -> tuple[str, str]:
    """models/ (VLM under models/vlm, the aligner, FLUX, TAEF1), custom_nodes/ (pack, stand-in, probes), input/."""
    from PIL import Image

    models, custom_nodes = base / "models", base / "custom_nodes"
    custom_nodes.mkdir(parents=True)
    (custom_nodes / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    write_stand_in_node(custom_nodes)
    (custom_nodes / "thinkdiff_bench_probe.py").write_text(PROBE_NODE)
    vlm = models / "vlm" / "Qwen2-VL-7B-Instruct"
    if smoke:
        write_tiny_qwen_vl(vlm)
        write_official_aligner(models / "thinkdiff" / "thinkdiff_lvlm.pth", input_size=64)
        write_tiny_flux(models / "diffusion_models" / "flux1-dev.safetensors")
    else:
        write_random_qwen2_vl_7b(vlm, layers=28, vision_depth=32, device="cuda")
        write_official_aligner(models / "thinkdiff" / "thinkdiff_lvlm.pth", input_size=3584)
        write_flux_fp8(models / "diffusion_models" / "flux1-dev.safetensors", "cuda")
    write_taef1(models / "vae_approx")
    (base / "input").mkdir()
    pictures = ("cards_red.png", "cards_green.png")
    for name, colour in zip(pictures, ("red", "green")):
        Image.new("RGB", (512, 512), colour).save(base / "input" / name)
    return pictures


def outcome(entry: dict) -> tuple[str, str]:
    """(ok | refused | oom | error, the error's first line)."""
    if entry["status"]["status_str"] == "success":
        return "ok", ""
    errors = [data for name, data in entry["status"]["messages"] if name == "execution_error"]
    message = errors[0].get("exception_message", "") if errors else ""
    if "even with every other model offloaded" in message:
        return "refused", message.splitlines()[0]
    if "out of memory" in message.lower() or "OutOfMemory" in (errors[0].get("exception_type", "") if errors else ""):
        return "oom", message.splitlines()[0][:200]
    return "error", message.splitlines()[0][:200] if message else json.dumps(entry["status"])[:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"), help="a ComfyUI checkout")
    parser.add_argument("--cards", type=float, nargs="+", default=[12, 16, 24], help="card sizes to emulate, GB")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--steps", type=int, default=4, help="FLUX steps (the memory peak does not depend on them)")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the path, measures nothing")
    args = parser.parse_args()
    if not args.comfyui_dir:
        parser.error("give --comfyui-dir (or COMFYUI_DIR): a ComfyUI checkout")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA GPU (use --smoke to check the path on the CPU)")
    total_gb = torch.cuda.get_device_properties(0).total_memory / 2**30 if not args.smoke else 0.0
    cards = [0.0] if args.smoke else args.cards
    rows: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="thinkdiff-cards-") as workdir:
        base = Path(workdir)
        started = time.perf_counter()
        pictures = write_models(base, args.smoke)
        (base / "extra_model_paths.yaml").write_text(f"thinkdiff_cards:\n    base_path: {base}\n")
        print(f"wrote the models in {time.perf_counter() - started:.0f} s", flush=True)
        for card in cards:
            extra = () if args.smoke else ("--reserve-vram", f"{max(0.0, total_gb - card):.2f}")
            server = ComfyServer(Path(args.comfyui_dir), base, base / "extra_model_paths.yaml", cpu=args.smoke,
                                 extra_args=extra, environment={"THINKDIFF_CARD_GB": str(card)})
            label, status = "cpu" if args.smoke else f"card{card:g}", "not started"
            try:
                server.wait_ready()
                for precision in args.precisions:
                    started = time.perf_counter()
                    prompt = reasoning_prompt(precision, 64 if args.smoke else 512, 2 if args.smoke else args.steps,
                                              pictures)
                    entry = server.wait_history(server.queue(prompt), timeout=900)
                    status, detail = outcome(entry)
                    rows[f"{label}_{precision}"] = status
                    for probe in ("vlm_peak", "flux_peak"):
                        texts = entry.get("outputs", {}).get(probe, {}).get("text")
                        if texts:
                            rows[f"{label}_{precision}_{probe}_gib"] = texts[0]
                    print(f"{label} {precision}: {status} in {time.perf_counter() - started:.0f} s {detail}", flush=True)
            finally:
                server.stop()
                if status not in ("ok", "refused"):
                    print(server.log()[-3000:])
    print(f"device: {'cpu smoke run (tiny models)' if args.smoke else torch.cuda.get_device_name(0)}, "
          f"cards emulated: {', '.join(f'{c:g} GB' for c in cards) if not args.smoke else 'none'}")
    for name, value in rows.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
