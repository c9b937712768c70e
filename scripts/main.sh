#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the quick theory validation
# (width sweeps against the full eNTK and NT's infinite-width kernels; a few minutes).
# Arguments go to `nt-pntk validate`, e.g. `--config paper --output runs/paper`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
nt-pntk validate --config quick --output runs/validate-quick "$@"
