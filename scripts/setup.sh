#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs mrdeploy with everything the demo and the tests need.
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.mrdeploy-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing mrdeploy and its dependencies into .venv (torch CPU build, onnx, onnxruntime, ...)" >&2
  # grep drops the "Location ... is ignored" lines this machine's pip configuration prints
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all]' \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  echo "$want" > "$stamp"
fi
