"""Peak resident memory of loading a real-size aligner (3584 -> 4096 -> 4096), relative to its file size.

Each load runs in a fresh subprocess that resets its peak-RSS mark (Linux `/proc/self/clear_refs`,
value 5) just before the load, reads every weight once (memory-mapped pages count only once
touched), and reports `VmHWM` minus `VmRSS` before the load. `load_aligner` is compared with the naive way (`load_file` + a freshly initialised
module + `load_state_dict`, which holds two copies). Target: <= 1.3x the file size.

    python bench/aligner_load_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
sys.path.insert(0, {root!r})
import torch
from safetensors.torch import load_file
from thinkdiff_core.aligner import Aligner
from thinkdiff_core.checkpoint import load_aligner
torch.set_num_threads(1)
def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
open("/proc/self/clear_refs", "w").write("5")
before = status_kib("VmRSS")
if {how!r} == "load_aligner":
    aligner = load_aligner({path!r}).module
else:
    state = load_file({path!r})
    aligner = Aligner(3584, 4096).to(torch.bfloat16)
    aligner.load_state_dict({{k.removeprefix("mm_projector."): v for k, v in state.items()}})
touched = sum(float(p.sum()) for p in aligner.parameters())  # make every weight page resident
print(json.dumps({{"peak_growth_bytes": (status_kib("VmHWM") - before) * 1024}}))
"""


def measure(path: Path, how: str) -> int:
    code = CHILD.format(root=str(ROOT), path=str(path), how=how)
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_growth_bytes"]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from thinkdiff_core.aligner import Aligner
    from thinkdiff_core.checkpoint import AlignerInfo, LoadedAligner, save_aligner
    from thinkdiff_core.tokens import LVLM_RECIPE

    folder = Path(tempfile.mkdtemp())
    aligner = Aligner(3584, 4096).to(torch.bfloat16)
    path = save_aligner(folder / "aligner.safetensors", LoadedAligner(aligner, AlignerInfo("Qwen/Qwen2-VL-7B-Instruct", LVLM_RECIPE)))
    size = path.stat().st_size
    ours = measure(path, "load_aligner")
    naive = measure(path, "naive")
    print(f"file_bytes: {size}")
    print(f"load_aligner_peak_growth_bytes: {ours}")
    print(f"naive_peak_growth_bytes: {naive}")
    print(f"naive_peak_over_file: {naive / size:.2f}")
    print(f"load_aligner_peak_over_file: {ours / size:.2f}")


if __name__ == "__main__":
    main()
