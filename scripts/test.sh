#!/usr/bin/env bash
# Install everything the tests need, then lint, type-check and run the tests.
# Tests that need a sound server start their own private PulseAudio.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
