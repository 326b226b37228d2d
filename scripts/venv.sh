#!/usr/bin/env bash
# Make (or bring up to date) the project's own virtual environment: `scripts/venv.sh VENV EXTRAS [PIP_ARGS...]`.
#
# Called by `make demo` / `make test`. torch is installed first and on purpose: left to pip, an unpinned
# `torch` is a CUDA build of several GB, useless on a machine without an NVIDIA GPU. So without a GPU
# this takes torch's CPU build (from a local wheel when pip already finds one, else from PyTorch's CPU
# index) and says so. An existing torch in VENV is kept.
set -euo pipefail
venv=$1 extras=$2; shift 2
python=${PYTHON:-python3}
torch_version=${TORCH_VERSION:-2.13.0}
torch_cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating the virtual environment $venv (with $("$python" --version))"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q)

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found: installing torch $torch_version (a CUDA build, several GB)"
        "${pip[@]}" "torch==$torch_version"
    else
        echo "setup: no NVIDIA GPU found: installing torch's CPU build ($torch_version+cpu, ~200 MB instead of a multi-GB CUDA build)"
        "${pip[@]}" "torch==$torch_version+cpu" 2>/dev/null \
            || "${pip[@]}" "torch==$torch_version+cpu" --extra-index-url "$torch_cpu_index"
    fi
fi

echo "setup: installing the project (editable) with [$extras]${*:+ and $*}"
"${pip[@]}" -e ".[$extras]" "$@"
"$venv/bin/python" -c "import torch, transformers; print(f'setup: ready: torch {torch.__version__} ({\"CUDA\" if torch.cuda.is_available() else \"CPU\"}), transformers {transformers.__version__}')"
