#!/usr/bin/env bash
# The GPU acceptance check in one command (see bench/gpu_check.py). On a bare GPU machine
# whose Python has torch but not this project's light dependencies, it installs the wheels
# carried in .gpu/wheels (made by `bash bench/gpu_check.sh --prepare` on a machine with pip
# access), and finds WikiText-2 in ../shared/data or .gpu/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .gpu/wheels .gpu/data
    $PY -m pip download -q --no-deps -d .gpu/wheels -c constraints.txt \
        tomli_w textual rich markdown-it-py linkify-it-py uc-micro-py mdit-py-plugins platformdirs pytest-textual-snapshot syrupy
    # The [gpu] extra's kernels for the speed-lever rows (their own dependencies, triton, come with CUDA torch).
    $PY -m pip download -q --no-deps -d .gpu/wheels -c constraints.txt liger-kernel cut-cross-entropy torchao
    cp -r ../shared/data/wikitext-2 .gpu/data/
    exit 0
fi
if ! $PY -c "import tomli_w, textual" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps .gpu/wheels/*.whl
elif ! $PY -c "import liger_kernel, cut_cross_entropy, torchao" 2>/dev/null && ls .gpu/wheels/liger_kernel-*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps .gpu/wheels/liger_kernel-*.whl .gpu/wheels/cut_cross_entropy-*.whl \
        .gpu/wheels/torchao-*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TUI_LM_CACHE="${TUI_LM_CACHE:-$PWD/.gpu/cache}"
exec $PY bench/gpu_check.py "$@"
