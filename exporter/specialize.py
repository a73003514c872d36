"""The onnxruntime backend's artifact: the source model specialized to one profile, and its check.

Specializing fixes every input dim the profile fixes (a static profile: all of them; a ranged profile:
batch when its range is one value, and channels), clears the stale intermediate shapes, then runs shape
inference and constant folding (the onnxscript optimizer, then onnxslim) so that shape
arithmetic disappears: for a static profile Shape/Gather/Concat chains fold to constants and a ViT's
resampled position embedding becomes one constant tensor. ``onnx.checker`` checks the result.

``check_specialized`` runs the source and the specialized model side by side (ONNX Runtime, CPU) on the
same random inputs at the profile's min, opt and max, and reports max abs error and cosine per output.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mrdeploy._ort import cpu_session  # re-exported: the one session factory
from mrdeploy.errors import ExportError
from mrdeploy.metrics import compare  # re-exported: (max abs error, cosine) of two outputs
from mrdeploy.runtime.profiles import Profile

SHAPE_OPS = ("Shape", "Size")


@dataclass
class CheckRow:
    profile: str
    point: str  # "min" | "opt" | "max"
    shapes: dict[str, tuple[int, ...]]
    output: str
    max_abs: float
    cosine: float
    ok: bool
    note: str = ""


@dataclass
class Specialized:
    profile: Profile
    model: object  # onnx.ModelProto
    nodes_before: int
    nodes_after: int
    optimizer: str
    seconds: float
    ops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def shape_ops_left(self) -> int:
        return sum(self.ops.get(op, 0) for op in SHAPE_OPS)


def _copy(model):
    import onnx

    return onnx.ModelProto.FromString(model.SerializeToString())


def fix_input_dims(model, profile: Profile):
    """A copy of ``model`` whose inputs have every dim fixed that the profile fixes (min == max)."""
    m = _copy(model)
    fixed_symbols: dict[str, int] = {}
    for vi in m.graph.input:
        r = profile.inputs.get(vi.name)
        if r is None:
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(r.min):
            raise ExportError(
                f"profile {profile.name!r}: input {vi.name!r} has rank {len(dims)} in the model, "
                f"the profile gives rank-{len(r.min)} shapes"
            )
        for d, lo, hi in zip(dims, r.min, r.max):
            if lo == hi:
                if d.HasField("dim_param") and d.dim_param:
                    fixed_symbols[d.dim_param] = lo
                d.Clear()
                d.dim_value = int(lo)
    # intermediate shapes recorded for the dynamic model are stale now: let inference redo them
    del m.graph.value_info[:]
    for vo in m.graph.output:
        for d in vo.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                if d.dim_param in fixed_symbols:
                    value = fixed_symbols[d.dim_param]
                    d.Clear()
                    d.dim_value = value
                else:
                    d.Clear()
    return m


def _fold(model, profile: Profile) -> tuple[object, str]:
    """onnxscript's optimizer (constant folding incl. CastLike/Expand of constants), then onnxslim
    (shape inference, folding, Conv+BN fusion; its Gemm fusion is skipped: it wraps MatMuls in
    Reshapes). Either alone when the other fails."""
    errors, used = [], []
    try:
        import onnxscript.optimizer

        model = onnxscript.optimizer.optimize(model)
        used.append("onnxscript")
    except Exception as e:  # the optimizer raises many types
        errors.append(f"onnxscript: {type(e).__name__}: {str(e)[:200]}")
    try:
        import onnxslim

        model = onnxslim.slim(model, skip_fusion_patterns=["FusionGemm"])
        used.append("onnxslim")
    except Exception as e:  # onnxslim raises plain Exceptions
        errors.append(f"onnxslim: {type(e).__name__}: {str(e)[:200]}")
    if not used:
        raise ExportError(f"profile {profile.name!r}: constant folding failed ({'; '.join(errors)})")
    return model, "+".join(used)


def specialize(model, profile: Profile) -> Specialized:
    """The source model specialized to ``profile``: dims fixed, shape arithmetic folded, checked."""
    import onnx

    start = time.perf_counter()
    fixed = fix_input_dims(model, profile)
    out, optimizer = _fold(fixed, profile)
    # keep what the source says about itself (mrdeploy metadata, producer, doc)
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    out.doc_string = model.doc_string
    try:
        onnx.checker.check_model(out)
    except Exception as e:
        raise ExportError(
            f"profile {profile.name!r}: the specialized model fails onnx.checker: {str(e).strip()[:300]}"
        ) from None
    notes = []
    try:  # strict shape inference; custom-domain ops may defeat it, and the run check below decides
        onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
    except Exception as e:
        notes.append(f"strict shape inference failed: {str(e).strip()[:200]}")
    ops = collections.Counter(n.op_type for n in out.graph.node)
    return Specialized(
        profile=profile,
        model=out,
        nodes_before=len(model.graph.node),
        nodes_after=len(out.graph.node),
        optimizer=optimizer,
        seconds=time.perf_counter() - start,
        ops=dict(ops),
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------ check


def check_points(profile: Profile) -> list[tuple[str, dict[str, tuple[int, ...]]]]:
    """(label, shapes) at min, opt and max; identical points (a static profile) are checked once."""
    out, seen = [], set()
    for label in ("min", "opt", "max"):
        shapes = {name: tuple(getattr(r, label)) for name, r in profile.inputs.items()}
        key = tuple(sorted(shapes.items()))
        if key in seen:
            continue
        seen.add(key)
        out.append((label, shapes))
    return out


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def random_feeds(session, shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        dtype = _NP_TYPES.get(i.type, np.float32)
        feeds[i.name] = rng.standard_normal(tuple(shapes[i.name])).astype(dtype)
    return feeds


def check_specialized(
    source_session,
    candidate,
    profile: Profile,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    min_cosine: float = 0.9999,
    threads: int | None = 1,
    seed: int = 0,
) -> list[CheckRow]:
    """Compare ``candidate`` (a ModelProto, path or session) with the source on random inputs at the
    profile's min/opt/max. See :func:`close_enough` for when a row is ok."""
    session = candidate if hasattr(candidate, "run") else cpu_session(candidate, threads)
    names = [o.name for o in source_session.get_outputs()]
    rows: list[CheckRow] = []
    for label, shapes in check_points(profile):
        feeds = random_feeds(source_session, shapes, seed)
        ref = source_session.run(names, feeds)
        try:
            got = session.run(names, feeds)
        except Exception as e:
            for n in names:
                rows.append(CheckRow(profile.name, label, shapes, n, float("inf"), 0.0, False, f"run failed: {str(e)[:160]}"))
            continue
        for n, r, g in zip(names, ref, got):
            if r.shape != g.shape:
                rows.append(
                    CheckRow(profile.name, label, shapes, n, float("inf"), 0.0, False, f"shape {g.shape} != {r.shape}")
                )
                continue
            max_abs, cos = compare(r, g)
            ok, note = close_enough(r, g, atol, rtol, min_cosine, max_abs, cos)
            rows.append(CheckRow(profile.name, label, shapes, n, max_abs, cos, ok, note))
    return rows


def close_enough(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, min_cosine: float,
                 max_abs: float | None = None, cosine: float | None = None) -> tuple[bool, str]:
    """(ok, why not): Polygraphy's elementwise rule, every value within ``atol`` or within ``rtol`` of
    ``|ref|``; the cosine is a second test only where an error is above ``atol`` (an output
    with energy): at float precision a near-zero output (a probability map on random input) has a
    meaningless cosine."""
    if max_abs is None or cosine is None:
        max_abs, cosine = compare(ref, got)
    if not np.isfinite(max_abs):
        return False, "non-finite output"
    if max_abs <= atol:
        return True, ""
    a, b = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    err = np.abs(b - a)
    bad = (err > atol) & (err > rtol * np.abs(a))
    if bad.any():
        return False, f"{int(bad.sum())} of {bad.size} values outside atol {atol:g} and rtol {rtol:g}"
    if cosine < min_cosine:
        return False, f"cosine {cosine:.6f} < {min_cosine}"
    return True, ""


def format_check_table(rows: Sequence[CheckRow]) -> str:
    lines = [f"{'profile':<16} {'at':<4} {'shape':<20} {'output':<14} {'max abs err':>12} {'cosine':>10}  ok"]
    for r in rows:
        shape = ",".join("x".join(map(str, s)) for s in r.shapes.values())
        lines.append(
            f"{r.profile:<16} {r.point:<4} {shape:<20} {r.output:<14} {r.max_abs:>12.3g} {r.cosine:>10.6f}  "
            + ("yes" if r.ok else "NO " + r.note)
        )
    return "\n".join(lines)


def session_settings(profile: Profile, threads: int | None) -> dict:
    """What the manifest records for an onnxruntime profile: session settings, and provider options for
    the GPU execution providers installed here (the TensorRT provider's profile shapes come from the
    profile)."""
    import onnxruntime as ort

    options: dict = {
        "session": {
            "intra_op_num_threads": int(threads) if threads else 0,
            "graph_optimization_level": "all",
        }
    }
    available = ort.get_available_providers()
    provider_options = {}
    if "TensorrtExecutionProvider" in available:
        shapes = {}
        for which in ("min", "opt", "max"):
            shapes[f"trt_profile_{which}_shapes"] = ",".join(
                f"{name}:{'x'.join(str(int(d)) for d in getattr(r, which))}" for name, r in profile.inputs.items()
            )
        provider_options["TensorrtExecutionProvider"] = shapes
    if "CUDAExecutionProvider" in available:
        provider_options["CUDAExecutionProvider"] = {"cudnn_conv_algo_search": "EXHAUSTIVE"}
    if provider_options:
        options["provider_options"] = provider_options
    return options
