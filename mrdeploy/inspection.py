"""``mrdeploy inspect``: what a bundle or an ONNX model holds, as a dict (for --json) and as text.

Bundles are read through the runtime's manifest (no onnx needed); when onnx is installed, the bundle's
source model also gives the dynamic axes. A ``.onnx`` file is read with onnx (imported here, inside
the function: this module is not part of the runtime).
"""

from __future__ import annotations

import os
from pathlib import Path

from mrdeploy.errors import BundleError


def inspect_path(path: str | os.PathLike) -> dict:
    """A bundle directory (or its manifest.json) or an ONNX model -> a JSON-ready description."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".onnx":
        return inspect_onnx(p)
    return inspect_bundle(p)


def _onnx_io(model) -> tuple[list[dict], list[dict]]:
    def dims(vi):
        shape = vi.type.tensor_type.shape
        return [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?") for d in shape.dim]

    def elem(vi):
        import onnx

        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    init_names = {i.name for i in model.graph.initializer}
    inputs = [
        {"name": i.name, "dtype": elem(i), "shape": dims(i), "dynamic": [d for d in dims(i) if isinstance(d, str)]}
        for i in model.graph.input
        if i.name not in init_names
    ]
    outputs = [
        {"name": o.name, "dtype": elem(o), "shape": dims(o), "dynamic": [d for d in dims(o) if isinstance(d, str)]}
        for o in model.graph.output
    ]
    return inputs, outputs


def _estimate(record: dict) -> str:
    """' (at HxW, the worst size; estimate E)': the size whose own pairs gave the held-out drop, and the
    point estimate where the drop is its upper bound (top-1); '' when neither applies."""
    e, at = record.get("estimated_drop"), record.get("drop_at")
    parts = ([] if at is None else [f"at {at}, the worst size"]) + (
        [] if e is None or e == record.get("drop") else [f"estimate {e:.4f}"])
    return f" ({'; '.join(parts)})" if parts else ""


def inspect_onnx(path: Path) -> dict:
    try:
        import onnx
    except ImportError:
        raise BundleError(f"{path}: inspecting an ONNX model needs onnx (pip install onnx)") from None
    from mrdeploy._atomic import looks_like_onnx
    from mrdeploy.runtime.manifest import sha256_file
    from mrdeploy.runtime.modelinfo import ModelInfo

    if not looks_like_onnx(path):  # onnx.load reads a 0-byte file as an empty model
        raise BundleError(f"{path}: not a readable ONNX model (expected a ModelProto with an ir_version and a "
                          f"graph, got a {path.stat().st_size}-byte file that is not one)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for a corrupt file
        raise BundleError(f"{path}: not a readable ONNX model ({str(e).strip()[:200]})") from None
    inputs, outputs = _onnx_io(model)
    props = {p.key: p.value for p in model.metadata_props}
    info = ModelInfo.from_metadata_props(props)
    return {
        "kind": "onnx",
        "path": str(path),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "ir_version": model.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(model.graph.node),
        "inputs": inputs,
        "outputs": outputs,
        "metadata": info.to_dict() if info else None,
        "other_metadata": {k: v for k, v in props.items() if not k.startswith("mrdeploy.")},
    }


def inspect_bundle(path: Path) -> dict:
    from mrdeploy.runtime.manifest import Manifest, manifest_path

    mpath = manifest_path(path)
    bundle = mpath.parent
    m = Manifest.read(bundle)
    source_io = None
    src = bundle / m.source["artifact"]
    if src.is_file():
        try:
            import onnx

            source_io = _onnx_io(onnx.load(str(src), load_external_data=False))
        except Exception:  # onnx not installed, or an unreadable model: the manifest still describes it
            source_io = None
    profiles = []
    for e in m.profiles:
        art = bundle / e.artifact
        paths = [art] + [bundle / f["path"] for f in e.files]  # the artifact and its further files (IR .bin)
        present = all(q.is_file() for q in paths)
        profiles.append({
            "name": e.name,
            "describe": e.profile.describe(),
            "inputs": {k: r.to_dict() for k, r in e.profile.inputs.items()},
            "backend": e.backend,
            "precision": e.precision,
            "artifact": e.artifact,
            "files": [f["path"] for f in e.files],
            "present": present,
            "size_bytes": sum(q.stat().st_size for q in paths) if present else None,
            "sha256": e.sha256,
            "options": e.options,
            "calibration": e.calibration,
            "measurements": e.measurements,
        })
    ranges = {}
    for name in (e for e in (m.profiles[0].profile.inputs if m.profiles else {})):
        rs = [e.profile.inputs[name] for e in m.profiles if name in e.profile.inputs]
        ranges[name] = {
            axis: [min(r.min[i] for r in rs), max(r.max[i] for r in rs)]
            for i, axis in enumerate(("batch", "channels", "height", "width"))
        }
    users: dict[str, list[str]] = {}  # a file more than one graph reads (shared weights) -> who reads it
    for who, files in [("source", m.source.get("files", [])), *((e.name, e.files) for e in m.profiles)]:
        for f in files:
            users.setdefault(f["path"], []).append(who)
    shared = {rel: {"size_bytes": (bundle / rel).stat().st_size if (bundle / rel).is_file() else None, "used_by": who}
              for rel, who in users.items() if len(who) > 1}
    on_disk = [q for q in bundle.rglob("*") if q.is_file()]
    return {
        "kind": "bundle",
        "path": str(bundle),
        "size_bytes": sum(q.stat().st_size for q in on_disk),
        "shared_files": shared,
        "format_version": m.format_version,
        "policy": m.policy,
        "model": m.model.to_dict(),
        "source": {**m.source, "present": src.is_file()},
        "source_io": {"inputs": source_io[0], "outputs": source_io[1]} if source_io else None,
        "served_ranges": ranges,
        "profiles": profiles,
        "build": m.build,
    }


def _shape(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _info_lines(md: dict) -> list[str]:
    lines = [f"model: {md.get('name')}  task: {md.get('task')}"]
    for i in md.get("inputs", []):
        extra = []
        if i.get("divisor", 1) != 1:
            extra.append(f"divisor {i['divisor']}")
        if i.get("min_size"):
            extra.append(f"valid {i['min_size'][0]}x{i['min_size'][1]}..{(i.get('max_size') or ['?', '?'])[0]}x{(i.get('max_size') or ['?', '?'])[1]}")
        if i.get("mean") is not None:
            extra.append(f"mean {tuple(i['mean'])} std {tuple(i['std']) if i.get('std') else None}")
        lines.append(f"  input  {i['name']}: {i.get('layout', 'NCHW')} {i.get('dtype', 'float32')} "
                     f"{i.get('channels')} channels" + (f", {', '.join(extra)}" if extra else ""))
    for o in md.get("outputs", []):
        kind = f"spatial, stride {o.get('stride', 1)}" if o.get("spatial") else "not spatial"
        lines.append(f"  output {o['name']}: {kind}")
    labels = md.get("labels")
    if labels:
        shown = ", ".join(labels[:10]) + (f", ... ({len(labels)} labels)" if len(labels) > 10 else "")
        lines.append(f"  labels: {shown}")
    return lines


def format_inspection(d: dict) -> str:
    """Human-readable text for ``inspect_path``'s result."""
    out: list[str] = []
    if d["kind"] == "onnx":
        out.append(f"ONNX model {d['path']}  ({d['size_bytes'] / 1e6:.2f} MB, sha256 {d['sha256'][:12]})")
        out.append(f"ir_version {d['ir_version']}, opsets {d['opsets']}, {d['nodes']} nodes, producer {d['producer'] or '?'}")
        out.append("inputs:")
        for i in d["inputs"]:
            dyn = f"  dynamic: {', '.join(i['dynamic'])}" if i["dynamic"] else "  (static)"
            out.append(f"  {i['name']}: {i['dtype']} {_shape(i['shape'])}{dyn}")
        out.append("outputs:")
        for o in d["outputs"]:
            dyn = f"  dynamic: {', '.join(o['dynamic'])}" if o["dynamic"] else "  (static)"
            out.append(f"  {o['name']}: {o['dtype']} {_shape(o['shape'])}{dyn}")
        if d["metadata"]:
            out.append("mrdeploy metadata:")
            out += ["  " + line for line in _info_lines(d["metadata"])]
        else:
            out.append("mrdeploy metadata: none (flags such as --divisor/--mean/--std give it at build time)")
        for k, v in d["other_metadata"].items():
            out.append(f"  {k}: {v[:80]}")
        return "\n".join(out)

    out.append(f"bundle {d['path']}  (format version {d['format_version']}, policy {d['policy']})")
    out += _info_lines(d["model"])
    src = d["source"]
    out.append(f"source model: {src['artifact']}  sha256 {src['sha256'][:12]}" + ("" if src["present"] else "  MISSING"))
    if d["source_io"]:
        for i in d["source_io"]["inputs"]:
            out.append(f"  input  {i['name']}: {_shape(i['shape'])}  dynamic: {', '.join(i['dynamic']) or 'none'}")
        for o in d["source_io"]["outputs"]:
            out.append(f"  output {o['name']}: {_shape(o['shape'])}  dynamic: {', '.join(o['dynamic']) or 'none'}")
    for name, r in d["served_ranges"].items():
        out.append(f"served range {name}: batch {r['batch'][0]}-{r['batch'][1]}, "
                   f"height {r['height'][0]}-{r['height'][1]}, width {r['width'][0]}-{r['width'][1]}")
    out.append(f"profiles ({len(d['profiles'])}):")
    header = f"  {'name':<12} {'range':<34} {'backend':<12} {'prec':<5} {'artifact':<28} {'sha256':<12} {'MB':>6}"
    out.append(header)
    for p in d["profiles"]:
        rng = p["describe"].split("=", 1)[1]
        size = f"{p['size_bytes'] / 1e6:6.2f}" if p["size_bytes"] is not None else "MISSING"
        out.append(f"  {p['name']:<12} {rng:<34} {p['backend']:<12} {p['precision']:<5} "
                   f"{p['artifact']:<28} {p['sha256'][:12]:<12} {size:>6}")
        if p["calibration"]:
            c = p["calibration"]
            drop = "" if c.get("drop") is None else f", held-out drop {c['drop']:.4f}" + _estimate(c)
            budget = "" if c.get("max_drop") is None else f" (--max-drop {c['max_drop']})"
            out.append(f"  {'':<12} int8 calibration: {c.get('method')}, {c.get('samples')} samples{drop}{budget}")
        held = (p["measurements"] or {}).get("heldout")
        if held:  # a bf16/fp16 engine held to --max-drop (calibration/heldout.py)
            out.append(f"  {'':<12} {p['precision']} engine on {held['heldout_rows'][0]} held-out pairs: drop "
                       f"{held['drop']:.4f} ({held['metric']}, --max-drop {held['max_drop']})"
                       f"{_estimate(held)}, cosine drop {held['cosine_drop']:.6f}")
        chose = p["measurements"] or {}
        if chose.get("choice") and chose.get("reason"):  # --precision auto: int8 or fp32, and why
            out.append(f"  {'':<12} precision auto: {chose['choice']}: {chose['reason']}")
        auto = (p["measurements"] or {}).get("auto")
        if auto:  # --backend auto: every candidate timed for this profile, and why this one
            out.append(f"  {'':<12} auto: {auto['choice']}: {auto['reason']}")
            for c in auto["candidates"]:
                label = f"{c['backend']} {c['precision']}" + (" (source model)" if c.get("source_model") else "")
                if "refused" in c:
                    out.append(f"  {'':<14} {label:<32} refused: {c['refused']}")
                    continue
                ms = "  ".join(f"{k} {v:.3f}" for k, v in c["ms"].items())
                drop = "" if c.get("drop") is None else f"  drop {c['drop']:.4f}"
                out.append(f"  {'':<14} {label:<32} {c['score_ms']:8.3f} ms  ({ms}){drop}")
        rule = (p["measurements"] or {}).get("source_rule")
        if rule:  # the specialized graph timed against the source model it came from
            spec = "  ".join(f"{k} {v:.3f}" for k, v in rule["specialized_ms"].items())
            src = "  ".join(f"{k} {v:.3f}" for k, v in rule["source_ms"].items())
            out.append(f"  {'':<12} source rule: kept the {rule['kept']} graph (source {rule['source_gain']:.3f}x "
                       f"the specialized; {rule['min_gain']:.3f}x needed): specialized ms {spec}; source ms {src}")
    for rel, f in d["shared_files"].items():
        size = f"{f['size_bytes'] / 1e6:.2f} MB" if f["size_bytes"] is not None else "MISSING"
        out.append(f"shared file {rel} ({size}, counted in MB above): read by {', '.join(f['used_by'])}")
    out.append(f"on disk: {d['size_bytes'] / 1e6:.2f} MB")
    b = d["build"]
    built = ", ".join(f"{k} {v}" for k, v in b.items() if v is not None and k != "created")
    out.append(f"built with: {built}" + (f"  at {b['created']}" if b.get("created") else ""))
    return "\n".join(out)
