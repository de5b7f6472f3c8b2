#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with the CPU build of torch,
# the toolkit (editable) and its test dependencies, and Chromium for static figure export (kaleido).
# Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
quiet() { "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is a CPU build on local disk here.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  quiet $PIP install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
quiet $PIP install -q -e '.[dev,ray]'
# Static export (.png/.svg/.pdf) needs a Chrome binary for kaleido 1.x, and the page tests render the
# demo page and the pattern viewer in it headless (tests/browser.py). Best effort: without it HTML
# figures still work, the toolkit says how to enable static ones, and the page tests skip.
if ! command -v chromium >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${INDUCTION_NO_CHROMIUM:-}" ]; then
    echo "installing Debian's chromium for static figure export (set INDUCTION_NO_CHROMIUM=1 to skip)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "note: could not install chromium; static figures disabled, HTML figures work"
  else
    echo "note: no Chrome/Chromium found; for .png/.svg/.pdf figures run: apt-get install chromium"
  fi
fi
.venv/bin/python -c "import torch, transformer_lens, induction, circuits"
echo "set-up done: .venv ($(.venv/bin/python -c 'from importlib.metadata import version as v; print("torch", v("torch"), "transformer-lens", v("transformer-lens"))'))"
