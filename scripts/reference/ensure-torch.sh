#!/usr/bin/env bash
# PyTorch (CPU), safetensors and numpy for the reference scripts: installed from the package
# registry when missing. The benchmark scripts call this first, before anything is built or
# timed, so an install never lands inside a measurement.
set -euo pipefail
if python3 -c "import torch, safetensors, numpy" 2> /dev/null; then
    exit 0
fi
echo "installing PyTorch (CPU), safetensors and numpy for the reference..." >&2
python3 -m pip install -q torch safetensors numpy >&2
python3 -c "import torch, safetensors, numpy"
