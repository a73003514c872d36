"""Per-profile INT8 calibration: ranges at the profile's own sizes, Q/DQ model, cache, accuracy budget.

``calibrate_profile`` does one profile (the builder's int8/auto hook calls it); ``calibrate`` does every
profile of a model into an output directory with a report.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mrdeploy._atomic import atomic_dir, atomic_file, check_output, run_tempdir, write_text_atomic
from mrdeploy._progress import quiet_progress
from mrdeploy.calibration import graph
from mrdeploy.calibration.bias import MIN_SAMPLES, correct_biases
from mrdeploy.calibration.budget import Budget, fit_budget
from mrdeploy.calibration.cache import write_cache
from mrdeploy.calibration.evaluate import Scorer, latency, metric_for
from mrdeploy.calibration.preprocess import heldout_feeds, prepare, profile_sizes
from mrdeploy.calibration.qdq import activation_type, keep_float, reduce_range, symmetric, write_qdq
from mrdeploy.calibration.ranges import METHODS, amax, compute_ranges, to_jsonable
from mrdeploy.calibration.sources import load_data
from mrdeploy.errors import CalibrationError
from mrdeploy.runtime.manifest import sha256_file
from mrdeploy.runtime.modelinfo import ModelInfo
from mrdeploy.runtime.profiles import Profile, complete_profiles, parse_batch

DEFAULT_METHOD = "minmax"  # entropy clipped the example models' ranges and kept 13 nodes float where minmax kept 5
DEFAULT_SAMPLES = 64  # calibration items per profile (all of them when there are fewer)


def check_max_drop(max_drop: float | None) -> None:
    """The accuracy budget is a fraction in [0, 1) (0.03 = 3 points), or None for no budget."""
    if max_drop is not None and not 0 <= max_drop < 1:
        raise CalibrationError(f"--max-drop must be in [0, 1) (a fraction: 0.01 = 1 point), got {max_drop}")

# precision=auto serves INT8 only when it is at least this much faster than FP32 at the opt shape:
# INT8 costs some accuracy, and a smaller gain from a short side-by-side timing is within its noise.
AUTO_MIN_SPEEDUP = 1.05


@dataclass
class ProfileCalibration:
    """What calibrating one profile produced and measured."""

    profile: Profile
    method: str
    target: str
    samples: int
    seed: int
    sizes: list[str]
    source_fingerprint: str
    data_fingerprint: str
    qdq_path: Path | None = None
    cache_path: Path | None = None
    metric: str = "top1"
    heldout: int = 0
    heldout_rows: list[int] | None = None  # (sample, size) pairs the drop is measured on, and all pairs
    drop: float | None = None  # of the final Q/DQ model on held-out samples (top-1: the estimate's upper bound)
    estimated_drop: float | None = None  # the point estimate (evaluate.Score.estimate)
    drop_at: str | None = None  # top-1: the input size whose own pairs gave the drop (None: all pairs together)
    observed_drop: float | None = None  # top-1: the counted fraction of flips (moves in steps of 1/N)
    cosine_drop: float | None = None
    weight_bits: int = 8
    notes: list[str] = field(default_factory=list)
    drop_all_int8: float | None = None  # before any node was kept float for the budget
    max_drop: float | None = None
    quantized_nodes: int = 0
    float_nodes: list[dict] = field(default_factory=list)  # kept float for the budget: group, nodes, cost
    rule_float_nodes: list[str] = field(default_factory=list)  # kept float by rule (attention MatMuls around a Softmax)
    precision: str = "int8"
    measurements: dict | None = None
    skipped: list[str] = field(default_factory=list)
    percentile: float | None = None
    bias_corrected: int = 0  # layers whose int32 bias calibration corrected (calibration/bias.py)

    def to_dict(self) -> dict:
        """The manifest's ``calibration`` field for this profile."""
        return {
            "method": self.method,
            "percentile": self.percentile,
            "target": self.target,
            "activation_type": "int8 symmetric" if symmetric(self.target) else "uint8 asymmetric",
            "weight_type": "int8 symmetric per-channel" + (
                "" if self.weight_bits == 8 else f", {self.weight_bits}-bit range (reduce_range: CPU without VNNI)"),
            "weight_bits": self.weight_bits,
            "bias_corrected": self.bias_corrected,
            "samples": self.samples,
            "seed": self.seed,
            "sizes": self.sizes,
            "data_fingerprint": self.data_fingerprint,
            "source_fingerprint": self.source_fingerprint,
            "cache": self.cache_path.name if self.cache_path else None,
            "cache_sha256": sha256_file(self.cache_path) if self.cache_path and self.cache_path.is_file() else None,
            "metric": self.metric,
            "heldout": self.heldout,
            "heldout_rows": self.heldout_rows,
            "drop": self.drop,
            "observed_drop": self.observed_drop,
            "estimated_drop": self.estimated_drop,
            "drop_at": self.drop_at,
            "cosine_drop": self.cosine_drop,
            "drop_all_int8": self.drop_all_int8,
            "max_drop": self.max_drop,
            "quantized_nodes": self.quantized_nodes,
            "float_nodes": self.float_nodes,
            "rule_float_nodes": self.rule_float_nodes,
            "skipped_files": len(self.skipped),
            "notes": self.notes,
        }


def _model_and_info(model_path: Path, work: Path) -> tuple[Path, ModelInfo]:
    """The model to quantize (a prepared copy: see graph.prepare_for_quantization) and its ModelInfo."""
    info = graph.model_info(graph.load(model_path))
    return graph.prepare_for_quantization(model_path, work / "prepared.onnx"), info


def calibrate_profile(
    model_path: str | Path,
    profile: Profile,
    data,
    *,
    qdq_path: str | Path,
    cache_path: str | Path | None = None,
    method: str = DEFAULT_METHOD,
    percentile: float = 99.99,
    samples: int = 64,
    seed: int = 0,
    target: str = "onnxruntime",
    max_drop: float | None = None,
    heldout=None,
    size_mode: str = "spread",
    precision: str = "int8",
    metric: str | None = None,
    latency_runs: int = 20,
    threads: int | None = None,
    source_fingerprint: str | None = None,
    reference_path: str | Path | None = None,
    weight_bits: int | None = None,
    bias_correction: bool = True,
) -> ProfileCalibration:
    """Calibrate ``model_path`` for ``profile`` on ``data`` (any source ``load_data`` takes, or a
    CalibrationSet) and write the Q/DQ model to ``qdq_path`` (and the TensorRT-style cache with its
    record to ``cache_path``). ``precision="auto"``: also measure FP32 vs INT8 latency at the profile's
    opt shape and set ``.precision`` to the faster one that meets the budget ("fp32" leaves
    ``qdq_path`` written but unchosen). Held-out outputs are compared with ``reference_path`` (default:
    ``model_path``; the builder passes the source model, so a wrong specialization cannot hide).
    ``weight_bits``: 8, or 7 (reduce_range); default :func:`qdq.reduce_range` of the target.
    ``bias_correction``: put each layer's per-channel output mean back where FP32 has it
    (:mod:`.bias`). Raises
    CalibrationError when the budget cannot be met."""
    if method not in METHODS:
        raise CalibrationError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    activation_type(target)  # validates target
    if precision not in ("int8", "auto"):
        raise CalibrationError(f"calibration precision {precision!r}: expected int8 or auto")
    check_max_drop(max_drop)
    model_path = Path(model_path)
    with tempfile.TemporaryDirectory(prefix="mrdeploy-calib-", dir=run_tempdir()) as tmp:
        work = Path(tmp)
        src, info = _model_and_info(model_path, work)
        channels = info.inputs[0].channels if info.inputs else 3
        cset = load_data(data, samples, seed, heldout, channels, need_heldout=max_drop is not None)
        missing = [n for n in profile.inputs if n not in {i.name for i in info.inputs}]
        if missing:
            raise CalibrationError(f"profile {profile.name} names inputs {missing} the model does not have "
                                   f"(model inputs: {[i.name for i in info.inputs]})")
        inputs = [info.input(n) for n in profile.inputs]
        divisors = {i.name: i.divisor for i in inputs}
        sizes = profile_sizes(profile, len(cset.calib), size_mode, seed, divisors)

        def feed(item, size, where):
            return {i.name: prepare(item, i, size[i.name], where) for i in inputs}

        batch = graph.batch_limits(graph.load(src), set(profile.inputs))
        calib_feeds = [feed(it, sizes[k], f"calibration sample {k}") for k, it in enumerate(cset.calib)]
        ranges = compute_ranges(src, calib_feeds, method, symmetric=symmetric(target),
                                percentile=percentile, desc=f"calibrating {profile.name}",
                                batch=batch)
        ranges_json = to_jsonable(ranges)
        model = graph.load(src)
        rule_float = graph.softmax_neighbors(model)
        quantizable = [n.name for n in graph.quantizable_nodes(model)]
        bits = weight_bits or (7 if reduce_range(target) else 8)
        out_name = info.outputs[0].name if info.outputs else model.graph.output[0].name
        metric = metric or metric_for(info.task)

        candidate = write_qdq(src, work / "int8.onnx", ranges_json, method, target, exclude=rule_float,
                              weight_bits=bits)
        full_int8 = graph.load(candidate)  # as quantized: what the budget's search floats blocks of
        uncorrected = candidate

        def corrected(q, path: Path) -> tuple[Path, int]:
            """``q`` with its biases corrected (calibration/bias.py), saved at ``path``."""
            n = correct_biases(q, model, calib_feeds, batch=batch, threads=threads,
                               desc=f"bias correction {profile.name}")
            graph.save(q, path)
            return path, n

        n_corrected = 0
        too_few = len(calib_feeds) < MIN_SAMPLES  # means over fewer samples are noise (calibration/bias.py)
        correct = bias_correction and not too_few
        if correct:
            copy = type(full_int8)()
            copy.CopyFrom(full_int8)  # full_int8 stays as quantized
            candidate, n_corrected = corrected(copy, work / "int8_corrected.onnx")

        def build(exclude: Sequence[str], path: Path) -> Path:
            """The full INT8 model with the nodes ``exclude`` computing in float (see qdq.keep_float)."""
            graph.save(keep_float(full_int8, model, exclude), path)
            return path

        result = ProfileCalibration(
            profile=profile, method=method, target=target, samples=len(cset.calib), seed=seed,
            sizes=sorted({"/".join(f"{h}x{w}" for h, w in s.values()) for s in sizes}, key=_size_key),
            source_fingerprint=source_fingerprint or sha256_file(model_path), data_fingerprint=cset.fingerprint,
            metric=metric, max_drop=max_drop, rule_float_nodes=rule_float, skipped=cset.skipped,
            percentile=percentile if method == "percentile" else None, weight_bits=bits, notes=list(cset.notes),
            bias_corrected=n_corrected,
        )
        if bias_correction and too_few:
            result.notes.append(f"bias correction left out: it needs {MIN_SAMPLES} calibration samples, "
                                f"got {len(calib_feeds)}")
        if max_drop is not None and not cset.heldout:
            raise CalibrationError(
                f"--max-drop needs held-out samples that calibration did not see, but {cset.description} "
                f"has only the {len(cset.calib)} calibration samples: add data, lower --calib-samples "
                "or give held-out data")
        if cset.heldout:
            held_feeds = heldout_feeds(cset.heldout, inputs, profile)
            scorer = Scorer.make(reference_path or model_path, held_feeds, out_name, metric, threads, batch)
            result.heldout = len(cset.heldout)
            result.heldout_rows = list(scorer.rows)
            if scorer.rows[0] < scorer.rows[1]:
                result.notes.append(
                    f"the drop is measured on {scorer.rows[0]} of {scorer.rows[1]} held-out (sample, size) pairs: "
                    "the others' FP32 class flips under one grey level of noise")
            first = scorer.score(candidate)
            plain = first if uncorrected == candidate else scorer.score(uncorrected)
            # left out only when both signals say it hurts (few or unlike calibration samples): with few
            # held-out pairs the drop moves by whole flips, where the cosine drop is continuous (the 6 pairs
            # of tests/test_real_int8.py's bias-correction test on a VNNI CPU: drop 0.25 with it and 0.11
            # without, cosine drop 0.0039 and 0.0076)
            if plain.drop < first.drop and plain.cosine < first.cosine:
                result.notes.append(f"bias correction left out: the held-out drop was {first.drop:.4f} with it, "
                                    f"{plain.drop:.4f} without (cosine drop {first.cosine:.4f}, {plain.cosine:.4f})")
                candidate, first, result.bias_corrected = uncorrected, plain, 0
            result.drop_all_int8 = first.drop
            _record(result, first)
            if max_drop is not None and first.drop > max_drop:
                types = set(graph.quantize_op_types())
                groups = graph.node_groups(model, [n.name for n in model.graph.node
                                                   if n.op_type in types and n.name not in rule_float])
                # the search floats blocks of the model as quantized: a corrected bias is right only
                # for the layers before it as they were when it was corrected, so the ranking of one
                # block floated alone would measure the other layers' stale corrections. The blocks
                # found, the model is corrected again for what stays INT8, and kept if no worse.
                fit: Budget = fit_budget(groups, build, scorer.score, plain, max_drop, work,
                                         desc=f"budget {profile.name}", name=profile.name, metric=metric)
                candidate, result.float_nodes, final, n_corrected = fit.path, fit.float_nodes, fit.score, 0
                if correct:
                    path, n = corrected(graph.load(fit.path), work / "budget_corrected.onnx")
                    again = scorer.score(path)
                    if again.drop <= final.drop:
                        candidate, final, n_corrected = path, again, n
                    else:
                        result.notes.append(f"bias correction left out: the held-out drop of the budget's model "
                                            f"was {again.drop:.4f} with it, {final.drop:.4f} without")
                result.bias_corrected = n_corrected
                _record(result, final)
        floated = {n for g in result.float_nodes for n in g["nodes"]} | set(rule_float)
        result.quantized_nodes = len([n for n in quantizable if n not in floated])
        if precision == "auto":
            shape_feed = {i.name: _opt_feed(profile, i.name) for i in inputs}
            result.measurements = latency(src, candidate, shape_feed, runs=latency_runs, threads=threads)
            faster = result.measurements["speedup"] >= AUTO_MIN_SPEEDUP
            result.precision = "int8" if faster else "fp32"
            result.measurements["choice"] = result.precision
            result.measurements["min_speedup"] = AUTO_MIN_SPEEDUP
            result.measurements["reason"] = (
                f"int8 {result.measurements['speedup']:.2f}x fp32 at the opt shape"
                + ("" if faster else f" (< {AUTO_MIN_SPEEDUP:.2f}x needed)")
                + ("" if max_drop is None else f", drop {result.drop:.4f} <= {max_drop}")
            )
        with atomic_file(qdq_path) as t:
            shutil.copyfile(candidate, t)
        result.qdq_path = Path(qdq_path)
        if cache_path is not None:
            record = {
                "profile": profile.to_dict(), "method": method, "percentile": result.percentile,
                "target": target, "samples": result.samples, "seed": seed, "size_mode": size_mode,
                "sizes": result.sizes, "source_fingerprint": result.source_fingerprint,
                "data_fingerprint": result.data_fingerprint, "ranges": ranges_json,
            }
            result.cache_path, _ = write_cache(cache_path, amax(ranges), record)
    return result


def _record(result: ProfileCalibration, score) -> None:
    result.drop, result.observed_drop, result.cosine_drop, result.estimated_drop = (
        round(v, 6) for v in (score.drop, score.observed, score.cosine, score.estimate))
    result.drop_at = score.at


def _opt_feed(profile: Profile, name: str):
    import numpy as np

    shape = profile.inputs[name].opt
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _size_key(text: str):
    return [int(v) for part in text.split("/") for v in part.split("x")]


@dataclass
class CalibrationResult:
    """Every profile's calibration, where the files went and the report."""

    profiles: list[ProfileCalibration]
    output_dir: Path | None
    model: str
    source_fingerprint: str
    data_fingerprint: str

    def report(self) -> dict:
        return {
            "model": self.model,
            "source_fingerprint": self.source_fingerprint,
            "data_fingerprint": self.data_fingerprint,
            "profiles": [
                {"name": p.profile.name, "profile": p.profile.describe(), "precision": p.precision,
                 "artifact": p.qdq_path.name if p.qdq_path else None, **p.to_dict(),
                 "measurements": p.measurements}
                for p in self.profiles
            ],
        }

    def table(self) -> str:
        head = ("profile", "sizes", "method", "samples", "held-out", "metric", "drop", "float nodes", "precision", "int8/fp32 ms")
        rows = []
        for p in self.profiles:
            m = p.measurements
            rows.append((
                p.profile.describe(), ",".join(p.sizes[:4]) + ("..." if len(p.sizes) > 4 else ""), p.method,
                str(p.samples), str(p.heldout), p.metric,
                "-" if p.drop is None else f"{p.drop:.4f}",
                str(sum(len(g["nodes"]) for g in p.float_nodes) + len(p.rule_float_nodes)),
                p.precision, "-" if not m else f"{m['int8_ms']:.2f}/{m['fp32_ms']:.2f}",
            ))
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
        for p in self.profiles:
            for g in p.float_nodes:
                lines.append(f"  {p.profile.name}: kept float {g['group']} ({len(g['nodes'])} nodes): drop "
                             f"{g['drop_alone']:.4f} with it alone float")
            if p.rule_float_nodes:
                lines.append(f"  {p.profile.name}: kept float by rule (attention cores, Softmax between "
                             f"its MatMuls): {len(p.rule_float_nodes)} nodes")
            lines.extend(f"  {p.profile.name}: {n}" for n in p.notes)
        return "\n".join(lines)


def resolve_profiles(profiles: Sequence[Profile | str], info: ModelInfo, batch: str | None = None) -> list[Profile]:
    """Profiles from Profile objects or ``--profile`` strings, checked against the model's constraints
    (the same checks as ``build-engine``'s: :func:`mrdeploy.runtime.profiles.complete_profiles`)."""
    return complete_profiles(
        profiles, {i.name: i.channels for i in info.inputs}, parse_batch(batch), {i.name: i.divisor for i in info.inputs},
        {i.name: i.min_size for i in info.inputs if i.min_size}, {i.name: i.max_size for i in info.inputs if i.max_size})


def calibrate(
    model_path: str | Path,
    profiles: Sequence[Profile | str],
    data,
    *,
    output_dir: str | Path,
    method: str | None = DEFAULT_METHOD,
    percentile: float = 99.99,
    samples: int | None = DEFAULT_SAMPLES,
    seed: int = 0,
    target: str = "onnxruntime",
    max_drop: float | None = None,
    heldout=None,
    quiet: bool = False,
    size_mode: str = "spread",
    precision: str = "int8",
    metric: str | None = None,
    batch: str | None = None,
    threads: int | None = None,
    force: bool = False,
    bias_correction: bool = True,
) -> CalibrationResult:
    """Calibrate every profile; write ``<profile>.onnx`` (Q/DQ), ``<profile>.calib`` (+ ``.calib.json``)
    and ``report.json`` into ``output_dir``, all or nothing (replacing only an earlier calibration output,
    or with ``force`` another mrdeploy output). ``method``/``samples`` None: the defaults; ``quiet``:
    no progress bars during this call."""
    check_output(output_dir, "calibration", force)
    method = method or DEFAULT_METHOD
    samples = DEFAULT_SAMPLES if samples is None else samples
    model_path = Path(model_path)
    with quiet_progress(quiet):
        info = graph.model_info(graph.load(model_path))
        resolved = resolve_profiles(profiles, info, batch)
        if not resolved:
            raise CalibrationError("no profiles to calibrate: give at least one --profile")
        channels = info.inputs[0].channels if info.inputs else 3
        check_max_drop(max_drop)
        cset = load_data(data, samples, seed, heldout, channels, need_heldout=max_drop is not None)
        source_fp = sha256_file(model_path)
        results = []
        with atomic_dir(output_dir, "calibration", force) as tmp:
            for p in resolved:
                results.append(calibrate_profile(
                    model_path, p, cset, qdq_path=tmp / f"{p.name}.onnx", cache_path=tmp / f"{p.name}.calib",
                    method=method, percentile=percentile, samples=samples, seed=seed, target=target,
                    max_drop=max_drop, size_mode=size_mode, precision=precision, metric=metric, threads=threads,
                    source_fingerprint=source_fp, bias_correction=bias_correction,
                ))
            result = CalibrationResult(results, Path(output_dir), info.name, source_fp, cset.fingerprint)
            write_text_atomic(tmp / "report.json", json.dumps(result.report(), indent=1) + "\n")
            for r in results:  # paths as they will be once the directory is in place
                r.qdq_path = Path(output_dir) / r.qdq_path.name
                r.cache_path = Path(output_dir) / r.cache_path.name if r.cache_path else None
    return result
