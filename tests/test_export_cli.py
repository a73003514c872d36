"""``mrdeploy export``: the table, the report, flags, and one-line errors that leave nothing at OUT."""

from __future__ import annotations

import json
import textwrap

import onnx
import pytest

from mrdeploy.cli import main
from mrdeploy.cli.export import parse_model_args
from mrdeploy.errors import ExportError
from mrdeploy.runtime.modelinfo import ModelInfo

MODELS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=3, width=4, scale=1.0, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width, num_classes)
        self.scale, self.relu = scale, relu

    def forward(self, x):
        y = self.conv(x) * self.scale
        y = torch.relu(y) if self.relu else y
        return self.head(y.mean(dim=(2, 3)))


class Baked(nn.Module):
    def forward(self, x):
        return x.sum(dim=(2, 3)) / (int(x.shape[2]) * int(x.shape[3]))


def net(num_classes=3, width=4, scale=1.0, relu=True):
    torch.manual_seed(0)
    return Net(num_classes, width, scale, relu)


def baked():
    return Baked()


def broken(**kw):
    raise RuntimeError("cannot build: no weights for this size")
'''


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_models")
    (d / "cli_models.py").write_text(textwrap.dedent(MODELS))
    return str(d / "cli_models.py")


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_export_prints_the_sweep_table_and_writes_report(spec, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n\n")
    out, report = tmp_path / "m.onnx", tmp_path / "r.json"
    code, stdout, stderr = run([
        "export", f"{spec}:net", "-o", str(out), "--input-shape", "1x3x64x64", "--model-arg", "width=6",
        "--model-arg", "scale=0.5", "--model-arg", "relu=false", "--divisor", "16", "--min-size", "32",
        "--max-size", "256x512", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
        "--labels", str(labels), "--report", str(report), "--exporter", "torchscript",
    ], capsys)
    assert code == 0, stderr
    lines = stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("size"))
    assert [c.strip() for c in lines[header].split("|")] == ["size", "batch", "max abs", "max rel", "cosine", "pass  case"]
    rows = lines[header + 2: header + 9]
    assert [r.split("|")[0].strip() for r in rows] == ["64x64", "32x32", "48x48", "96x96", "128x128", "48x80", "64x64"]
    assert all("PASS" in r for r in rows)
    assert "sweep: 7/7 sizes pass" in stdout and "exporter: torchscript" in stdout and f"wrote {out}" in stdout
    info = ModelInfo.from_metadata_props({p.key: p.value for p in onnx.load(str(out)).metadata_props})
    i = info.inputs[0]
    assert (i.divisor, i.min_size, i.max_size) == (16, (32, 32), (256, 512))
    assert i.mean == (0.485, 0.456, 0.406) and info.labels == ["cat", "dog", "bird"]
    data = json.loads(report.read_text())
    assert data["ok"] and data["sweep"]["rows"][1]["size"] == "32x32" and data["model"]["inputs"][0]["std"][2] == 0.225


def test_validate_sizes_and_no_validate(spec, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, _ = run(["export", f"{spec}:net", "-o", str(out), "--input-shape", "1x3x32x32",
                           "--exporter", "torchscript", "--validate-sizes", "16,40x24"], capsys)
    assert code == 0
    assert [ln.split("|")[0].strip() for ln in stdout.splitlines() if "PASS" in ln] == ["32x32", "16x16", "40x24", "32x32"]
    code, stdout, _ = run(["export", f"{spec}:net", "-o", str(out), "--input-shape", "1x3x32x32",
                           "--exporter", "torchscript", "--no-validate", "--no-optimize"], capsys)
    assert code == 0 and "sweep: skipped" in stdout and "not optimized" in stdout and "PASS" not in stdout


def test_baked_shape_fails_with_table_and_message(spec, tmp_path, capsys):
    out = tmp_path / "baked.onnx"
    code, stdout, stderr = run(["export", f"{spec}:baked", "-o", str(out), "--input-shape", "1x3x32x32"], capsys)
    assert code == 1
    assert stdout.count("FAIL") == 7 and stdout.count("PASS") == 2
    assert stderr.startswith("mrdeploy: error: the exported model matches PyTorch at the export size 1x3x32x32")
    assert "baked into the graph" in stderr and "1x3x64x64 (max abs err" in stderr
    assert "Traceback" not in stderr and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["nocolon"], "model spec 'nocolon' does not parse"),
        (["{spec}:broken"], "raised RuntimeError: cannot build: no weights for this size"),
        (["{spec}:net", "--input-shape", "1x3xHxW"], "input shape '1x3xHxW' does not parse: expected NxCxHxW"),
        (["{spec}:net", "--input-shape", "1x3x30x30", "--divisor", "8"], "is not a multiple of the divisor 8"),
        (["{spec}:net", "--model-arg", "width"], "--model-arg 'width' does not parse: expected key=value"),
        (["{spec}:net", "--model-arg", "depth=3"], "raised TypeError"),
        (["{spec}:net", "--checkpoint", "{tmp}/missing.pt"], "missing.pt does not exist"),
        (["{spec}:net", "--mean", "0.5,x"], "--mean '0.5,x' does not parse"),
        (["{spec}:net", "--validate-sizes", "64,abc"], "size 'abc' does not parse"),
        (["{spec}:net", "--labels", "{tmp}/nolabels.txt"], "labels file"),
    ],
)
def test_bad_input_one_line_error(spec, tmp_path, capsys, args, message):
    out = tmp_path / "out.onnx"
    argv = ["export", *[a.format(spec=spec, tmp=tmp_path) for a in args], "-o", str(out), "--exporter", "torchscript"]
    code, _, stderr = run(argv, capsys)
    assert code == 1
    assert stderr.startswith("mrdeploy: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_verbose_shows_traceback(spec, tmp_path, capsys):
    code, _, stderr = run(["--verbose", "export", f"{spec}:broken", "-o", str(tmp_path / "x.onnx")], capsys)
    assert code == 1 and "Traceback" in stderr and "cannot build" in stderr


def test_model_arg_values():
    assert parse_model_args(["a=3", "b=0.5", "c=true", "d=None", "e=32,64", "f=[1, 2]", "g=name"]) == {
        "a": 3, "b": 0.5, "c": True, "d": None, "e": [32, 64], "f": [1, 2], "g": "name"}
    with pytest.raises(ExportError, match="looks like JSON but does not parse"):
        parse_model_args(["x=[1,"])
