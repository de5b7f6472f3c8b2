#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with the CPU build of torch,
# the toolkit (editable) and its test dependencies. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is a CPU build on local disk here.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==${TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "is ignored" || true
fi
$PIP install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, transformer_lens, induction, circuits" 
echo "set-up done: .venv ($(.venv/bin/python -c 'import torch, transformer_lens as t; print("torch", torch.__version__, "transformer-lens", t.__version__)'))"
