#!/usr/bin/env bash
# The seed project's wrapper, kept for muscle memory: it calls the same CLI.
#   ./run_train_lm.sh --preset small --warmup 4000 --lr 6e-4 [--dataset D] [--epochs N] [--batch_size B]
# Any other flag is passed through to `tui-lm --no-ui` unchanged.
set -euo pipefail
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) args+=(--model_preset "$2"); shift 2 ;;
    --warmup) args+=(--warmup_steps "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if command -v tui-lm >/dev/null 2>&1; then
  exec tui-lm --no-ui "${args[@]}"
fi
exec python -m tui_lm --no-ui "${args[@]}"
