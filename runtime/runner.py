"""The Runner: a bundle's engines behind one call that sends each input to the right profile.

- Engines load lazily, on first use; ``max_loaded=N`` keeps at most N loaded, evicting the least
  recently used idle one (an engine in use by another thread is never closed under it).
- Thread-safe: ``run`` may be called from several threads at once. Engine loads happen outside the
  runner's lock, so threads using already-loaded engines are not held up by a load.
- Artifacts are verified (inside the bundle, a regular file, sha256) when the bundle is loaded, for the
  profiles this runner serves, and each again right before its engine loads (a file replaced after
  ``load()`` is refused, not served); the source ``model.onnx`` is not read by the runtime, so it is not
  hashed here (a deployment may leave it out).
- Outputs must be finite: NaN/Inf out of a finite input is an InputError naming the profile. TensorRT plans are also checked against the TensorRT version and GPU
  right before they are deserialized.

Inputs are normalized NCHW float32 arrays (``mrdeploy.runtime.images`` turns image files into them).
float16 and float64 arrays are cast to float32 (no other dtype is accepted). Padding (policy ``pad``
and sizes off the divisor) fills with 0 *after* normalization, i.e. with the dataset mean colour, or
reflects / repeats the edge (the bundle's ``pad_mode``); see runtime/fitting.py.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrdeploy.errors import BundleError, InputError, MrdeployError
from mrdeploy.runtime.backends.base import Engine
from mrdeploy.runtime.backends.registry import get_backend
from mrdeploy.runtime.dispatch import Decision, check_policy, decide
from mrdeploy.runtime.fitting import fit_inputs, restore_outputs
from mrdeploy.runtime.manifest import Manifest, ProfileEntry, verify_artifacts, verify_entry_files
from mrdeploy.runtime.modelinfo import OutputInfo
from mrdeploy.runtime.profiles import Profile

_CAST_OK = (np.dtype(np.float16), np.dtype(np.float64))
_DECISION_CACHE_SIZE = 256


def _as_int(d) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
        raise TypeError(d)
    return int(d)


def _all_finite(a: np.ndarray) -> bool:
    """True when no element is NaN or Inf. The dot product of the array with itself (one BLAS pass,
    no temporary) is finite exactly when every element is, unless the sum of squares overflows, in
    which case the elementwise test decides."""
    v = a.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # huge finite values overflow the sum: not an error
        if np.isfinite(np.dot(v, v)):
            return True
    return bool(np.isfinite(v).all())


# the hot path's finite test is a bare dot product (entering np.errstate is among the costliest lines right
# after an engine call): a sum of squares that overflows sends the call down the full path, which decides
# without this warning
warnings.filterwarnings("ignore", message="overflow encountered in dot", category=RuntimeWarning,
                        module=__name__)


@dataclass(frozen=True)
class RunInfo:
    """What ``run_with_info`` reports beside the outputs."""

    decision: Decision
    latency_ms: float  # fit + engine run + restore, without any engine load
    load_ms: float  # time spent loading the engine for this call (0 when it was loaded already)


class Runner:
    """Serve a bundle. Make one with ``mrdeploy.runtime.load``; use as a context manager or ``close()``."""

    def __init__(
        self,
        bundle_dir: str | Path,
        manifest: Manifest,
        backend: str | None = None,
        providers=None,
        max_loaded: int | None = None,
        policy: str | None = None,
        threads: int | None = None,
        verify: bool = True,
    ):
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        entries = manifest.profiles
        if backend is not None:
            entries = [e for e in entries if e.backend == backend]
            if not entries:
                have = sorted({e.backend for e in manifest.profiles})
                raise BundleError(
                    f"{self.bundle_dir}: no profile built for backend {backend!r}; the bundle has {', '.join(have)}"
                )
        self.entries: list[ProfileEntry] = list(entries)
        self._by_name = {e.name: e for e in self.entries}
        self.policy = policy if policy is not None else manifest.policy
        self.pad_mode = getattr(manifest, "pad_mode", "zero")  # zero | reflect | edge
        check_policy(self.policy)
        if max_loaded is not None and int(max_loaded) < 1:
            raise InputError(f"max_loaded must be at least 1, got {max_loaded}")
        self.max_loaded = int(max_loaded) if max_loaded is not None else None
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise InputError(f"threads must be a non-negative integer (0: the backend's default), got {threads!r}")
        self.providers = providers
        self.threads = threads
        self.model = manifest.model
        self.input_names = [i.name for i in self.model.inputs] or list(self.entries[0].profile.inputs)
        for info in self.model.inputs:
            if info.layout.upper() != "NCHW":
                raise BundleError(
                    f"{self.bundle_dir}: input {info.name!r} has layout {info.layout}, expected NCHW "
                    "(the runtime serves NCHW image inputs)"
                )
        first = self.entries[0].profile
        self._channels = {n: first.inputs[n].opt[1] for n in self.input_names}
        self._divisors = {n: 1 for n in self.input_names}
        for info in self.model.inputs:
            self._channels[info.name] = info.channels
            self._divisors[info.name] = max(1, int(info.divisor or 1))
        self._outputs: dict[str, OutputInfo] = {o.name: o for o in self.model.outputs}
        self.verify = verify
        if verify:
            verify_artifacts(self.bundle_dir, manifest, profiles=self._by_name, source=False)
        for e in self.entries:  # a runtime of another version refuses now, not at the first call
            get_backend(e.backend).check_loadable(e, manifest.build)

        # profile -> the profile whose engine serves it: itself, or an earlier profile whose engine would be
        # the same (Backend.engine_key: e.g. two ranged profiles specialized to one stored artifact)
        self._engine_of: dict[str, str] = {}
        keys: dict = {}
        for e in self.entries:
            backend = get_backend(e.backend)
            key = backend.engine_key(e, backend.engine_options({"providers": providers, "threads": threads}))
            self._engine_of[e.name] = e.name if key is None else keys.setdefault((e.backend, key), e.name)
        self._cond = threading.Condition()
        self._engines: OrderedDict[str, Engine] = OrderedDict()  # keyed by the serving profile's name
        self._loading: set[str] = set()
        self._in_use: Counter[str] = Counter()
        self.load_counts: Counter[str] = Counter()  # engine loads, under the serving profile's name
        self._local = threading.local()
        self._closed = False
        self._decisions: dict = {}  # (shapes, policy) -> Decision; dict ops are atomic under the GIL
        self._profiles = [e.profile for e in self.entries]
        # the hot path (``run``): shape -> (engine, decision) for a single float32 input served exactly by a
        # loaded engine that is never evicted (no max_loaded); see _hot_run
        self._single = self.input_names[0] if len(self.input_names) == 1 else None
        self._hot: dict[tuple, tuple[Engine, Decision, bool]] = {}

    # --- what the bundle serves ------------------------------------------------------------------

    @property
    def profiles(self) -> list[Profile]:
        return list(self._profiles)

    @property
    def loaded(self) -> list[str]:
        """Names of the profiles whose engine is loaded, least recently used first (profiles that share
        one engine are listed together)."""
        with self._cond:
            return [n for k in self._engines for n, e in self._engine_of.items() if e == k]

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the last ``run`` made by the calling thread (None before the first)."""
        return getattr(self._local, "decision", None)

    def select(self, *args, policy: str | None = None) -> Decision:
        """``select(batch, h, w)`` for a single-input model, or ``select({name: shape})`` with full NCHW
        (or (N, H, W)) shapes per input: the Decision ``run`` would make, without running anything."""
        if len(args) == 1 and isinstance(args[0], Mapping):
            shapes = {}
            for name, s in args[0].items():
                try:
                    s = tuple(_as_int(d) for d in s)
                except TypeError:
                    raise InputError(f"select: input {name!r}: expected a shape of integers, got {s!r}") from None
                if len(s) == 3 and name in self._channels:
                    s = (s[0], self._channels[name], s[1], s[2])
                shapes[name] = s
        elif len(args) == 3:
            name = self._single_input("select(batch, h, w)")
            if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in args):
                raise InputError(f"select(batch, h, w): expected three integers, got {args!r}")
            shapes = {name: (int(args[0]), self._channels[name], int(args[1]), int(args[2]))}
        else:
            raise InputError(f"select takes (batch, h, w) or a dict of shapes, got {len(args)} arguments")
        self._check_names(shapes)
        for name, s in shapes.items():
            self._check_shape(name, s)
        return self._decide(shapes, policy or self.policy)

    def _decide(self, shapes: dict[str, tuple], policy: str) -> Decision:
        """``decide``, memoized per (shapes, policy): a served stream repeats a few sizes."""
        key = (tuple(shapes.items()), policy)
        d = self._decisions.get(key)
        if d is None:
            d = decide(self._profiles, shapes, policy, self._divisors)  # raises for refused inputs
            if len(self._decisions) >= _DECISION_CACHE_SIZE:
                self._decisions.clear()
            self._decisions[key] = d
        return d

    # --- running ----------------------------------------------------------------------------------

    def __call__(self, x, policy: str | None = None):
        """One input (array, or a dict for several inputs) -> the output array when the model has one
        output, else a dict name -> array."""
        outs = self.run(x, policy=policy)
        return next(iter(outs.values())) if len(outs) == 1 else outs

    def run(self, inputs, policy: str | None = None) -> dict[str, np.ndarray]:
        """``{input name: NCHW array}`` (or a bare array for a single-input model) -> {output name: array}."""
        if policy is None and self._hot:
            outs = self._hot_run(inputs)
            if outs is not None:
                return outs
        return self.run_with_info(inputs, policy=policy)[0]

    def _hot_run(self, inputs) -> dict[str, np.ndarray] | None:
        """The same call as ``run_with_info`` with less Python in it, for what a served stream repeats: one
        C-contiguous float32 input of a shape already served exactly (no fitting, no restoring) by an
        engine that stays loaded. Right after an engine call the CPU caches hold the engine's data, not
        the interpreter's: every line run here costs several times what it costs in a loop without the
        engine (benchmarks/bench_runtime.py: the full path cost the example CNN +13.6% at 64x64, see
        docs/BENCHMARKS.md section 1). The input check stays, as a bare dot product of the input with
        itself, the cheapest test found there (finite exactly when every element is, or when it
        overflows: then, as for anything not recognized, ``run_with_info`` runs the call (None) and says
        what is wrong); outputs are checked here only for fp16/bf16 engines, which can overflow on a
        finite input."""
        a = inputs if type(inputs) is np.ndarray else (
            inputs.get(self._single) if type(inputs) is dict and len(inputs) == 1 else None)
        if a is None or a.dtype != np.float32 or not a.flags.c_contiguous:
            return None
        hot = self._hot.get(a.shape)
        v = a.reshape(-1)
        if hot is None or self._closed or not math.isfinite(np.dot(v, v)):
            return None
        engine, decision, check_outputs = hot
        outs = engine.run({self._single: a})
        if check_outputs:
            for y in outs.values():
                if y.dtype.kind == "f" and not np.isfinite(y).all():
                    return None  # run_with_info runs it again and raises, naming the profile
        self._local.decision = decision
        return outs

    def run_with_info(self, inputs, policy: str | None = None) -> tuple[dict[str, np.ndarray], RunInfo]:
        """Like ``run``, and also returns the Decision and the latency."""
        if self._closed:
            raise MrdeployError(f"runner for {self.bundle_dir} is closed")
        start = time.perf_counter()
        arrays = self._check_inputs(inputs)
        decision = self._decide({n: a.shape for n, a in arrays.items()}, policy or self.policy)
        feeds = self._fit(arrays, decision)
        outs, load_ms = self._run_fitted(decision.profile.name, feeds, arrays)
        outs = self._restore(outs, decision)
        self._local.decision = decision
        if (decision.action == "exact" and self._single is not None and self.max_loaded is None
                and policy in (None, self.policy)):
            self._remember(decision)
        latency = (time.perf_counter() - start) * 1e3 - load_ms
        return outs, RunInfo(decision, latency, load_ms)

    def _remember(self, decision: Decision) -> None:
        """Put an exact decision on the hot path once its engine is loaded (and takes float32)."""
        shape = decision.input_shapes[self._single]
        if shape in self._hot or len(self._hot) >= _DECISION_CACHE_SIZE:
            return
        with self._cond:
            engine = self._engines.get(self._engine_of[decision.profile.name])
        if engine is not None and engine.input_dtypes.get(self._single, np.dtype(np.float32)) == np.float32:
            # fp32/int8 engines compute in float32 from a finite input: their outputs are checked on the
            # other path only; fp16/bf16 ones can overflow, so theirs are checked here too
            precision = self._by_name[decision.profile.name].precision
            self._hot[shape] = (engine, decision, precision not in ("fp32", "int8"))

    def run_profile(self, name: str, inputs) -> dict[str, np.ndarray]:
        """Run the named profile directly, bypassing selection (parity checks, benchmarks). The inputs
        must already fit the profile's range: nothing is padded or resized."""
        if self._closed:
            raise MrdeployError(f"runner for {self.bundle_dir} is closed")
        if name not in self._by_name:
            raise InputError(f"no profile {name!r}; this runner serves {', '.join(self._by_name)}")
        arrays = self._check_inputs(inputs)
        profile = self._by_name[name].profile
        shapes = {n: a.shape for n, a in arrays.items()}
        if not profile.contains(shapes):
            got = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in shapes.items())
            raise InputError(f"profile {profile.describe()} does not contain the input ({got})")
        return self._run_fitted(name, arrays)[0]

    def _run_fitted(self, name: str, feeds: dict[str, np.ndarray], arrays=None) -> tuple[dict[str, np.ndarray], float]:
        """Run a profile's engine on inputs already checked and fitted to it (``arrays``: the caller's
        inputs before fitting, for the message of a non-finite output); returns the outputs and the
        milliseconds spent loading the engine for this call."""
        engine, load_ms = self._acquire(name)
        try:
            dtypes = engine.input_dtypes
            outs = engine.run({
                n: (a if a.dtype == dtypes.get(n, a.dtype) else a.astype(dtypes[n])) for n, a in feeds.items()
            })
        finally:
            self._release(name)
        self._check_outputs(outs, name, feeds if arrays is None else arrays)
        return outs, load_ms

    def warmup(self) -> dict[str, float]:
        """Run every profile once at its opt shape (zeros); returns the milliseconds per profile
        (including the engine load). With ``max_loaded`` smaller than the profile count, earlier
        engines are evicted again."""
        times = {}
        for e in self.entries:
            t0 = time.perf_counter()
            feeds = {n: np.zeros(r.opt, np.float32) for n, r in e.profile.inputs.items()}
            engine, _ = self._acquire(e.name)
            try:
                engine.run({n: a.astype(engine.input_dtypes.get(n, a.dtype)) for n, a in feeds.items()})
            finally:
                self._release(e.name)
            times[e.name] = (time.perf_counter() - t0) * 1e3
        return times

    def close(self) -> None:
        """Unload every engine; the runner cannot be used afterwards."""
        with self._cond:
            self._closed = True
            self._hot.clear()
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for e in engines:
            e.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(e.profile.describe() for e in self.entries)
        return f"Runner({str(self.bundle_dir)!r}, policy={self.policy!r}, profiles=[{names}])"

    # --- engines ----------------------------------------------------------------------------------

    def _create(self, name: str) -> Engine:
        entry = self._by_name[name]
        backend = get_backend(entry.backend)  # registered: the manifest was validated against the registry
        # hashed again as the engine loads (with verify): a file replaced after load() is not served
        path = verify_entry_files(self.bundle_dir, entry, self.verify)
        options = backend.engine_options({"providers": self.providers, "threads": self.threads})
        return backend.engine_class()(path, entry, build=self.manifest.build, **options)

    def _acquire(self, name: str) -> tuple[Engine, float]:
        """The engine for a profile, marked in use; loads it (evicting LRU idle engines) if needed."""
        name = self._engine_of[name]
        with self._cond:
            while True:
                if self._closed:
                    raise MrdeployError(f"runner for {self.bundle_dir} is closed")
                engine = self._engines.get(name)
                if engine is not None:
                    self._engines.move_to_end(name)
                    self._in_use[name] += 1
                    return engine, 0.0
                if name in self._loading:
                    self._cond.wait()
                    continue
                if self.max_loaded is not None and len(self._engines) + len(self._loading) >= self.max_loaded:
                    victim = next((n for n in self._engines if self._in_use[n] == 0), None)
                    if victim is None:
                        self._cond.wait()
                        continue
                    self._engines.pop(victim).close()
                    continue
                self._loading.add(name)
                break
        t0 = time.perf_counter()
        try:
            engine = self._create(name)
        except BaseException:
            with self._cond:
                self._loading.discard(name)
                self._cond.notify_all()
            raise
        load_ms = (time.perf_counter() - t0) * 1e3
        with self._cond:
            self._loading.discard(name)
            self._engines[name] = engine
            self._in_use[name] += 1
            self.load_counts[name] += 1
            self._cond.notify_all()
        return engine, load_ms

    def _release(self, name: str) -> None:
        name = self._engine_of[name]
        with self._cond:
            self._in_use[name] -= 1
            if self._loading or self.max_loaded is not None:  # only loads and evictions wait on this
                self._cond.notify_all()

    # --- inputs and outputs -----------------------------------------------------------------------

    def _single_input(self, what: str) -> str:
        if len(self.input_names) != 1:
            raise InputError(
                f"{what} is for single-input models; this model has inputs {self.input_names}: "
                "pass a dict {name: array}"
            )
        return self.input_names[0]

    def _check_names(self, given: Mapping) -> None:
        unknown = [n for n in given if n not in self.input_names]
        missing = [n for n in self.input_names if n not in given]
        if unknown or missing:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {unknown}")
            raise InputError(f"expected inputs {self.input_names}, got {list(given)} ({'; '.join(parts)})")

    def _check_shape(self, name: str, shape: tuple) -> None:
        c = self._channels[name]
        if len(shape) != 4:
            hint = ""
            if len(shape) == 3 and shape[-1] == c:
                hint = " (this looks like an HWC image: use mrdeploy.runtime.images.preprocess)"
            elif len(shape) == 3 and shape[0] == c:
                hint = " (add the batch axis: x[None])"
            raise InputError(f"input {name!r}: expected rank 4 (N, C, H, W), got shape {tuple(shape)}{hint}")
        if shape[1] != c:
            raise InputError(
                f"input {name!r}: expected {c} channels (N, {c}, H, W), got {shape[1]} in shape {tuple(shape)}"
            )
        if min(shape) < 1:
            raise InputError(f"input {name!r}: expected every axis to be at least 1, got shape {tuple(shape)}")

    def _check_inputs(self, inputs) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            inputs = {self._single_input("a bare array"): inputs}
        self._check_names(inputs)
        arrays = {}
        for name in self.input_names:
            a = inputs[name]
            if not isinstance(a, np.ndarray):
                try:
                    a = np.asarray(a)
                except Exception:
                    raise InputError(f"input {name!r}: expected a numpy array, got {type(a).__name__}") from None
            if a.dtype != np.float32:
                if a.dtype not in _CAST_OK:
                    raise InputError(
                        f"input {name!r}: expected float32 (normalized NCHW; float16/float64 are cast), "
                        f"got {a.dtype}; turn images into inputs with mrdeploy.runtime.images.preprocess"
                    )
                a = a.astype(np.float32)
            self._check_shape(name, a.shape)
            a = np.ascontiguousarray(a)
            if not _all_finite(a):
                bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
                raise InputError(
                    f"input {name!r}: expected finite values, got {bad} NaN/Inf of {a.size} in shape {a.shape}"
                )
            arrays[name] = a
        return arrays

    def _check_outputs(self, outs: Mapping[str, np.ndarray], profile: str, arrays: Mapping[str, np.ndarray]) -> None:
        """NaN/Inf out of a finite input: the model overflowed (float16, or inputs far outside its range)."""
        for oname, y in outs.items():
            y = np.asarray(y)
            if y.dtype.kind == "f" and y.size and not _all_finite(y):
                bad = int(y.size - np.count_nonzero(np.isfinite(y)))
                biggest = max(float(np.max(np.abs(a))) for a in arrays.values() if a.size)
                e = self._by_name[profile]
                raise InputError(
                    f"profile {profile!r} ({e.backend}, {e.precision}) gave {bad} NaN/Inf of {y.size} values in "
                    f"output {oname!r} for a finite input (largest |value| {biggest:.3g}): expected finite outputs; "
                    "the input is far outside the range the model was built for"
                )

    def _fit(self, arrays: dict[str, np.ndarray], d: Decision) -> dict[str, np.ndarray]:
        return fit_inputs(arrays, d, self.pad_mode)

    def _restore(self, outs: dict[str, np.ndarray], d: Decision) -> dict[str, np.ndarray]:
        return restore_outputs(outs, d, self._outputs, self.input_names)


def load(
    path: str | Path,
    backend: str | None = None,
    providers=None,
    max_loaded: int | None = None,
    policy: str | None = None,
    threads: int | None = None,
    verify: bool = True,
) -> Runner:
    """Open a bundle directory: read and validate the manifest, verify the artifacts' sha256, and
    return a Runner whose engines load lazily.

    backend:    serve only the profiles built for this backend ("onnxruntime", "tensorrt").
    providers:  ONNX Runtime providers, e.g. ["cuda"] or "tensorrt,cuda" (CPU is always the fallback).
    max_loaded: keep at most this many engines loaded (least recently used goes first).
    policy:     "pad" | "resize" | "error" for inputs outside every profile (default: the bundle's).
    threads:    intra-op threads per engine (default: what the bundle recorded, else the backend's).
    verify:     check every served artifact's sha256 now (on by default).
    """
    if not isinstance(path, (str, Path)) and not hasattr(path, "__fspath__"):
        raise BundleError(f"load: expected a bundle directory path, got {path!r}")
    if not str(path):
        raise BundleError("load: expected a bundle directory path, got ''")
    manifest = Manifest.read(path)
    p = Path(path)
    bundle_dir = p.parent if p.is_file() else p
    return Runner(bundle_dir, manifest, backend, providers, max_loaded, policy, threads, verify)
