"""The example models: dynamic exports that match PyTorch over a resolution sweep, and their specs."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch

from examples.zoo import EXAMPLES, build_example, checkpoint_path, export_example
from mrdeploy.exporter.sweep import plan_sizes, run_sweep
from mrdeploy.runtime.modelinfo import ModelInfo


def _info(path) -> ModelInfo:
    return ModelInfo.from_metadata_props({p.key: p.value for p in onnx.load(str(path)).metadata_props})


def _sweep(name, path):
    spec = EXAMPLES[name]
    info = _info(path)
    inp = {i.name: i for i in info.inputs}
    cases = plan_sizes(
        {n: tuple(s) for n, s in ({"input": spec.input_shape} if isinstance(spec.input_shape, tuple) else spec.input_shape).items()},
        {n: i.divisor for n, i in inp.items()},
        {n: i.min_size for n, i in inp.items()},
        {n: i.max_size for n, i in inp.items()},
    )
    torch.set_num_threads(2)
    return run_sweep(build_example(name), path, cases, [o.name for o in info.outputs])


@pytest.mark.parametrize("name", ["vit", "cnn", "seg"])
def test_example_passes_its_sweep(name, exported):
    report = _sweep(name, exported(name))
    sizes = {(s[2], s[3]) for r in report.rows for s in r.shapes.values()}
    assert len(sizes) >= 6
    assert any(h != w for h, w in sizes), "a non-square size"
    assert max(max(s) for s in sizes) > EXAMPLES[name].train_sizes[1], "a size larger than any used in training"
    assert {r.batch for r in report.rows} == {1, 3}
    for row in report.rows:
        assert row.error is None, row.error
        assert row.cosine >= 0.99999, (row.size, row.cosine)
        assert row.max_abs <= 1e-4 * row.scale, (row.size, row.max_abs, row.scale)
        assert row.passed


@pytest.mark.parametrize("name", ["vit", "cnn", "seg"])
def test_example_export_is_dynamic_with_metadata(name, exported):
    spec = EXAMPLES[name]
    model = onnx.load(str(exported(name)))
    (inp,) = model.graph.input
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, "height", "width"]
    assert [o.name for o in model.graph.output] == spec.output_names
    info = _info(exported(name))
    assert info.name == name and info.task == spec.task and info.labels == spec.labels
    i = info.inputs[0]
    assert (i.divisor, i.min_size, i.max_size) == (spec.divisor, (spec.min_size,) * 2, (spec.max_size,) * 2)
    assert i.mean == spec.mean and i.std == spec.std
    assert [(o.name, o.spatial, o.stride) for o in info.outputs] == [
        (n, n in (spec.spatial_outputs or {}), (spec.spatial_outputs or {}).get(n, 1)) for n in spec.output_names]


def test_vit_graph_resamples_its_position_embedding_and_has_explicit_softmax(exported):
    model = onnx.load(str(exported("vit")))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Softmax"] == 4  # one per block: the INT8 helper's softmax trap needs a real Softmax node
    resize = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resize) == 1
    attrs = {a.name: a for a in resize[0].attribute}
    assert attrs["mode"].s == b"cubic"
    # the size input is computed from the input's shape, not a constant baked at export time
    sizes_name = resize[0].input[3]
    assert sizes_name not in {t.name for t in model.graph.initializer}


def test_vit_token_count_reaches_the_softmax_trap():
    spec = EXAMPLES["vit"]
    model = build_example("vit", checkpoint=False)
    with torch.no_grad():
        grid = model.patch_embed(torch.zeros(1, 3, spec.max_size, spec.max_size))
        assert grid.shape[-2] * grid.shape[-1] >= 1000
        grid = model.patch_embed(torch.zeros(1, 3, 96, 160))  # non-square token grid 12 x 20
        assert tuple(model.pos(grid).shape[-2:]) == (12, 20)


def test_cnn_batchnorm_is_folded(exported):
    ops = Counter(n.op_type for n in onnx.load(str(exported("cnn"))).graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Conv"] == 13


def test_seg_output_follows_the_input_size():
    model = build_example("seg", checkpoint=False)
    with torch.no_grad():
        assert tuple(model(torch.zeros(2, 3, 96, 160)).shape) == (2, 4, 96, 160)


def test_examples_are_deterministic_and_load_checkpoints(tmp_path):
    a, b = build_example("cnn", checkpoint=False), build_example("cnn", checkpoint=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    for name, spec in EXAMPLES.items():
        assert spec.checkpoint.as_posix() == f"examples/checkpoints/{name}.pt"
        ckpt = checkpoint_path(name)
        if ckpt is not None:  # trained by examples/train*.py: the checkpoint must load strictly
            trained = build_example(name)
            assert not all(torch.equal(x, y) for x, y in zip(
                trained.state_dict().values(), build_example(name, checkpoint=False).state_dict().values()))


@pytest.fixture(scope="module")
def tracker_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("tracker") / "tracker.onnx"
    torch.set_num_threads(2)
    from mrdeploy.exporter import export

    spec = EXAMPLES["tracker"]
    return export(spec.factory_path, spec.input_shape, out, **spec.export_kwargs())


def test_tracker_two_inputs_export_and_sweep(tracker_export):
    result = tracker_export
    assert result.exporter == "dynamo"
    model = onnx.load(str(result.path))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert dims == {"template": ["batch", 3, "template_height", "template_width"],
                    "search": ["batch", 3, "search_height", "search_width"]}
    shapes = [(tuple(r.shapes["template"]), tuple(r.shapes["search"])) for r in result.sweep.rows]
    assert shapes == [
        ((1, 3, 128, 128), (1, 3, 256, 256)), ((1, 3, 112, 112), (1, 3, 224, 224)),
        ((1, 3, 128, 128), (1, 3, 384, 384)), ((1, 3, 112, 128), (1, 3, 224, 320)),
        ((3, 3, 128, 128), (3, 3, 256, 256))]
    assert all(r.passed and r.cosine >= 0.99999 for r in result.sweep.rows)
    info = result.model_info
    assert [(i.name, i.min_size, i.max_size) for i in info.inputs] == [
        ("template", (112, 112), (128, 128)), ("search", (224, 224), (384, 384))]
    assert [(o.name, o.spatial, o.stride) for o in info.outputs] == [("response", True, 8)]


def test_export_example_overrides(tmp_path):
    path = export_example("seg", tmp_path / "seg.onnx", exporter="torchscript", optimize=False)
    assert path == tmp_path / "seg.onnx" and path.is_file()


def test_zoo_cli_args_parse_as_mrdeploy_export():
    from examples.zoo import cli_args
    from mrdeploy.cli.export import command

    ctx = command.make_context("export", cli_args("tracker", "t.onnx"))
    p = ctx.params
    assert p["model"] == "examples/tracker.py:siamese_tracker" and p["output"] == "t.onnx"
    assert p["input_shapes"] == ("template=1x3x128x128", "search=1x3x256x256")
    assert p["min_size"] == ("template=112", "search=224") and p["spatial_outputs"] == ("response:8",)
    ctx = command.make_context("export", cli_args("seg", "s.onnx"))
    assert ctx.params["task"] == "segmentation" and ctx.params["divisor"] == ("16",)
