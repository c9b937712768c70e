#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the eNTK-vs-pNTK demo.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
nt-pntk demo "$@"
