#!/usr/bin/env bash
# The seed project's wrapper, kept for muscle memory: it calls the same CLI.
#   ./run_train_lm.sh --preset small --warmup 4000 --lr 6e-4 [--dataset D] [--epochs N] [--batch_size B]
# Any other flag is passed through to `tui-lm --no-ui` unchanged.
# It runs the first of these that has tui-lm installed, so a fresh shell needs no `activate`:
# the active virtual environment, the project's .venv next to this script, `tui-lm` on PATH,
# python3, python. None: one line saying how to install, exit status 2.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) args+=(--model_preset "$2"); shift 2 ;;
    --warmup) args+=(--warmup_steps "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# A python that imports the CLI has tui-lm and its dependencies (a system python may have neither).
has_tui_lm() { [[ -x "$1" ]] && "$1" -c "import tui_lm.cli" >/dev/null 2>&1; }
if [[ -n "${VIRTUAL_ENV:-}" ]] && has_tui_lm "$VIRTUAL_ENV/bin/python"; then
  exec "$VIRTUAL_ENV/bin/python" -m tui_lm --no-ui "${args[@]}"
fi
if has_tui_lm "$here/.venv/bin/python"; then
  exec "$here/.venv/bin/python" -m tui_lm --no-ui "${args[@]}"
fi
if command -v tui-lm >/dev/null 2>&1; then
  exec tui-lm --no-ui "${args[@]}"
fi
for name in python3 python; do
  if py="$(command -v "$name")" && has_tui_lm "$py"; then
    exec "$py" -m tui_lm --no-ui "${args[@]}"
  fi
done
echo "run_train_lm.sh: tui-lm is not installed (looked for it in \$VIRTUAL_ENV, $here/.venv, tui-lm, python3 and python); install it: cd $here && python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e ." >&2
exit 2
