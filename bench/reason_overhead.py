"""Reason node overhead over the bare core generation call (target: <= 1.05x).

Bare: `VisionLanguageModel.generate([prompt], settings)` with the prompt already built. Node: the whole
execute path from ComfyUI's inputs (IMAGE tensors in the Autogrow dict, multiline words): pictures from
tensors, the preset's prompt, the per-token callback (cancel check + progress), and, with a ComfyUI
checkout (`--comfyui-dir` / COMFYUI_DIR), the real `ThinkDiffReason.execute` with ComfyUI's memory manager
(`load_models_gpu`), `comfy.utils.ProgressBar` and interrupt check. Both generate the same tokens (same
seed) on a tiny random Qwen2-VL written to a temporary folder; runs alternate, and the fastest run of each
is compared (the least disturbed by other work on a shared machine).

    python bench/reason_overhead.py [--comfyui-dir DIR] [--tokens 128] [--repeats 15]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import torch
from _pack import load_pack, module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", help="a ComfyUI checkout: time the real node (default: COMFYUI_DIR)")
    parser.add_argument("--tokens", type=int, default=128, help="max = min new tokens (the paper's 128)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, comfyui = load_pack(args.comfyui_dir)
    core = module("thinkdiff_core")
    folder = module("thinkdiff_core.testing.tiny").write_tiny_qwen_vl(Path(tempfile.mkdtemp(prefix="reason-bench-")) / "qwen2_vl")
    vlm = core.VisionLanguageModel.from_pretrained(folder, dtype="fp32", device="cpu")
    settings = core.GenerationSettings(seed=0, max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    images = {f"image{i}": torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)}
    words = "red\ngreen\nyellow"
    pictures = [module("thinkdiff_core.images").tensor_to_pil(images[f"image{i}"])[0] for i in range(2)]
    prompt = core.cobsat_prompt(pictures, ["red", "green", "yellow"])

    def bare():
        return vlm.generate([prompt], settings)

    if comfyui:
        node = module("nodes.lvlm").ThinkDiffReason
        managed = module("nodes.comfy_models").ManagedModel(vlm, vlm.model)

        def through_node():
            return node.execute(vlm=managed, images=images, words=words, preset="cobsat_reasoning", custom_instruction="",
                                seed=settings.seed, temperature=settings.temperature, top_p=settings.top_p,
                                max_new_tokens=args.tokens, min_new_tokens=args.tokens, max_pixels=0)[0]
    else:
        operations = module("nodes.operations")
        cancelled = threading.Event()
        done = [0]

        def check_cancel() -> None:
            if cancelled.is_set():
                raise InterruptedError

        def report(count: int, total: int) -> None:
            done[0] = count

        def through_node():
            on_token = module("thinkdiff_core.progress").cancellable(check_cancel, report)
            return operations.reason(vlm, images, words, "cobsat_reasoning", "", settings, on_token)

    reference, via_node = bare(), through_node()  # warm-up, and the same generation both ways
    torch.testing.assert_close(via_node.features, reference.features)
    timings: dict[str, list[float]] = {"bare": [], "node": []}
    for _ in range(args.repeats):
        for name, call in (("bare", bare), ("node", through_node)):
            start = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - start)
    bare_s, node_s = min(timings["bare"]), min(timings["node"])
    print(f"path: {'ComfyUI ThinkDiffReason.execute (ProgressBar, interrupt check, load_models_gpu)' if comfyui else 'node plumbing without ComfyUI (same callback)'}")
    print(f"tokens: {args.tokens}, repeats: {args.repeats}, tiny Qwen2-VL (hidden {vlm.hidden_size}), CPU, 1 thread")
    print(f"bare_generate_s: {bare_s:.4f}")
    print(f"reason_node_s: {node_s:.4f}")
    print(f"reason_node_over_bare_generate: {node_s / bare_s:.3f}")


if __name__ == "__main__":
    main()
