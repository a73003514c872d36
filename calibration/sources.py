"""Calibration data sources: an image folder, .npy/.npz files, a ``module:callable``, or arrays in memory.

Every source yields *items*: one sample each, as a dict ``{input_name: array}`` (a bare array means the
model's only input, or the same image for every input). Arrays are

- ``uint8`` (or ``uint16``: 16-bit files) images, HWC (C in 1/3/4) or CHW: scaled to [0, 1] and normalized with the model's mean/std;
- floating arrays, CHW: taken as already preprocessed model input (normalized), only resized.

Each source also has a ``fingerprint`` (sha256) so a calibration cache made from other data is never
reused: for a folder, the sorted relative paths with sizes and mtimes; for files, their bytes; for a
callable or arrays, the arrays themselves.

:func:`load_data` splits what a source gives into the :class:`CalibrationSet`: calibration items and
held-out items (never calibrated on) for the accuracy budget.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrdeploy.errors import CalibrationError, InputError
from mrdeploy.runtime.images import IMAGE_SUFFIXES, image_files, read_image  # the one image path

Item = dict[str | None, np.ndarray]  # None: the model's only input / every input


@dataclass
class Samples:
    """Items loaded from a source, in a seeded order; ``skipped`` lists files that could not be read."""

    items: list[Item]
    fingerprint: str
    description: str
    skipped: list[str] = field(default_factory=list)


def _hash_arrays(items: Iterable[Item]) -> str:
    h = hashlib.sha256()
    for item in items:
        for key in sorted(item, key=str):
            a = np.ascontiguousarray(item[key])
            h.update(f"{key}|{a.dtype}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_fingerprint(root: Path, files: Sequence[Path]) -> str:
    """sha256 over the sorted relative paths, sizes and modification times of ``files``."""
    h = hashlib.sha256()
    for path in sorted(files):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _as_items(obj, where: str) -> list[Item]:
    """A yielded object -> items: a dict of arrays, a 3-D array (one sample) or a 4-D array (a batch)."""
    if isinstance(obj, Mapping):
        arrays = {k: np.asarray(v) for k, v in obj.items()}
        batched = {k: a for k, a in arrays.items() if a.ndim == 4}
        if batched:
            n = {a.shape[0] for a in arrays.values()}
            if len(n) != 1 or len(batched) != len(arrays):
                raise CalibrationError(f"{where}: a dict of batches needs 4-D arrays of one batch size, got "
                                       + ", ".join(f"{k}: {a.shape}" for k, a in arrays.items()))
            return [{k: a[i] for k, a in arrays.items()} for i in range(n.pop())]
        return [arrays]
    a = np.asarray(obj)
    if a.ndim == 4:
        return [{None: x} for x in a]
    if a.ndim in (2, 3):
        return [{None: a}]
    raise CalibrationError(f"{where}: expected an image array (H, W[, C]) / (C, H, W), a batch (N, ...) "
                           f"or a dict of them, got an array of shape {a.shape}")


def load_folder(root: Path, n: int, seed: int, channels: int = 3) -> Samples:
    """Up to ``n`` images from ``root`` (recursive, JPEG/PNG), in a seeded order; unreadable ones skipped."""
    if not root.is_dir():
        raise CalibrationError(f"calibration data folder {root} does not exist")
    files = image_files(root)
    if not files:
        raise CalibrationError(
            f"calibration data folder {root} holds no images: expected JPEG or PNG files (or another of {', '.join(IMAGE_SUFFIXES)}) "
            "anywhere below it, found none"
        )
    fingerprint = folder_fingerprint(root, files)
    order = np.random.default_rng(seed).permutation(len(files))
    items: list[Item] = []
    skipped: list[str] = []
    for i in order:
        if len(items) >= n:
            break
        try:
            items.append({None: read_image(files[i], channels)})
        except InputError as e:  # read_image names the file and why it cannot be decoded faithfully
            skipped.append(f"{files[i].relative_to(root)} ({str(e).split(': ', 1)[-1]})")
    return Samples(items, fingerprint, f"{root} ({len(files)} images)", skipped)


def load_arrays_file(path: Path) -> Samples:
    """Items from a .npy (one array: a batch or one sample) or .npz (every array in it, in key order)."""
    try:
        if path.suffix == ".npy":
            items = _as_items(np.load(path, allow_pickle=False), str(path))
        else:
            with np.load(path, allow_pickle=False) as z:
                items = [it for key in sorted(z.files) for it in _as_items(z[key], f"{path}[{key}]")]
    except CalibrationError:
        raise
    except Exception as e:
        raise CalibrationError(f"cannot read calibration arrays from {path}: {type(e).__name__}: {e}") from e
    return Samples(items, _hash_file(path), str(path))


def load_callable(spec: str, n: int) -> Samples:
    """Items from ``module:callable`` (or ``path/file.py:callable``), called with no arguments."""
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).resolve()
            mod_spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules.setdefault(file.stem, module)
            mod_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
        fn: Callable = getattr(module, attr)
    except (ImportError, AttributeError, FileNotFoundError) as e:
        raise CalibrationError(f"cannot load calibration data callable {spec!r}: {type(e).__name__}: {e}") from e
    items: list[Item] = []
    for obj in fn():
        items.extend(_as_items(obj, spec))
        if len(items) >= n:
            break
    return Samples(items[:n], _hash_arrays(items[:n]), spec)


def load_samples(data, n: int, seed: int = 0, channels: int = 3) -> Samples:
    """Load up to ``n`` items from ``data``: a folder, a .npy/.npz file, ``module:callable``, an array
    (a batch), a list of arrays/dicts, or a Samples (returned as is, trimmed to ``n``)."""
    if isinstance(data, Samples):
        return Samples(data.items[:n], data.fingerprint, data.description, data.skipped)
    if isinstance(data, np.ndarray) or (isinstance(data, (list, tuple)) and data and not isinstance(data[0], str)):
        items = [it for obj in ([data] if isinstance(data, np.ndarray) else data) for it in _as_items(obj, "arrays")]
        return Samples(items[:n], _hash_arrays(items[:n]), f"{len(items)} arrays")
    text = os.fspath(data)
    path = Path(text)
    if path.is_dir():
        return load_folder(path, n, seed, channels)
    if path.suffix in (".npy", ".npz"):
        if not path.is_file():
            raise CalibrationError(f"calibration data file {path} does not exist")
        s = load_arrays_file(path)
        return Samples(s.items[:n], s.fingerprint, s.description)
    if ":" in text and not path.exists():
        return load_callable(text, n)
    if path.exists():
        raise CalibrationError(f"calibration data {path}: expected a folder of images, a .npy/.npz file or "
                               f"module:callable, got a {path.suffix or 'extensionless'} file")
    raise CalibrationError(f"calibration data {text!r} does not exist: expected a folder of images, "
                           "a .npy/.npz file or module:callable")


def take(samples: Samples, n: int, what: str) -> tuple[list[Item], list[Item]]:
    """(first ``n`` items, the rest); CalibrationError when fewer than ``n`` were loaded."""
    if len(samples.items) < n:
        skipped = ""
        if samples.skipped:
            shown = ", ".join(samples.skipped[:5]) + (" ..." if len(samples.skipped) > 5 else "")
            skipped = f" ({len(samples.skipped)} unreadable files skipped: {shown})"
        raise CalibrationError(
            f"asked for {n} {what} samples, but {samples.description} gave only {len(samples.items)} usable "
            f"ones{skipped}; add data or lower --calib-samples"
        )
    return samples.items[:n], samples.items[n:]


def iter_chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


# ----------------------------------------------------------------------------------------------------
# the calibration set: calibration items and held-out items

DEFAULT_HELDOUT = 32
MIN_IMAGES = 2


@dataclass
class CalibrationSet:
    """Calibration items, held-out items (never calibrated on) and the data's fingerprint."""

    calib: list[Item]
    heldout: list[Item]
    fingerprint: str
    description: str
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_data(data, samples: int = 64, seed: int = 0, heldout=None, channels: int = 3,
              need_heldout: bool = False) -> CalibrationSet:
    """Load ``samples`` calibration items from ``data`` and the held-out items: ``heldout`` None (up to
    32 more items of ``data``, if it has them), an int (exactly that many more), or another data source
    (a folder, file or callable, as ``data``).

    With fewer than ``samples`` items, all are used (a note says so); when ``need_heldout`` (an accuracy
    budget) and no held-out data is given, a third of them (at most 32) is held out instead."""
    if isinstance(data, CalibrationSet):
        return data
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise CalibrationError(f"--calib-samples must be a whole number >= 1, got {samples!r}")
    if heldout is not None and not isinstance(heldout, int):
        loaded = load_samples(data, samples, seed, channels)
        _enough(loaded, "calibration data")
        held = load_samples(heldout, 10_000, seed + 1, channels)
        if len(held.items) < 1:
            raise CalibrationError(f"held-out data {held.description} has no usable images"
                                   + (f" ({len(held.skipped)} unreadable files)" if held.skipped else ""))
        notes = _short_note(loaded, samples)
        return CalibrationSet(loaded.items, held.items, loaded.fingerprint, loaded.description,
                              loaded.skipped + held.skipped, notes)
    extra = DEFAULT_HELDOUT if heldout is None else heldout
    loaded = load_samples(data, samples + extra, seed, channels)
    _enough(loaded, "calibration data")
    if isinstance(heldout, int):
        if len(loaded.items) < samples + heldout:
            raise CalibrationError(f"asked for {samples} calibration + {heldout} held-out samples, but "
                                   f"{loaded.description} gave only {len(loaded.items)} usable ones")
        calib, rest = take(loaded, samples, "calibration")
        return CalibrationSet(calib, rest[:heldout], loaded.fingerprint, loaded.description, loaded.skipped)
    items, notes = loaded.items, []
    if len(items) < samples + 1 and need_heldout:
        held_n = min(DEFAULT_HELDOUT, max(1, len(items) // 3))
        notes.append(f"{loaded.description} has {len(items)} usable images, fewer than --calib-samples "
                     f"{samples} plus held-out ones: calibrating on {len(items) - held_n} and holding out "
                     f"{held_n} for the accuracy budget (give --heldout-data for a separate held-out set)")
        return CalibrationSet(items[held_n:], items[:held_n], loaded.fingerprint, loaded.description,
                              loaded.skipped, notes)
    notes = _short_note(loaded, samples)
    return CalibrationSet(items[:samples], items[samples:samples + extra], loaded.fingerprint,
                          loaded.description, loaded.skipped, notes)


def _enough(loaded, what: str) -> None:
    if len(loaded.items) < MIN_IMAGES:
        shown = ", ".join(loaded.skipped[:5]) + (" ..." if len(loaded.skipped) > 5 else "")
        skipped = f" ({len(loaded.skipped)} unreadable files skipped: {shown})" if loaded.skipped else ""
        raise CalibrationError(f"{what} {loaded.description}: expected at least {MIN_IMAGES} usable images, "
                               f"got {len(loaded.items)}{skipped}")


def _short_note(loaded, samples: int) -> list[str]:
    n = len(loaded.items)
    if n >= samples:
        return []
    return [f"{loaded.description} has {n} usable images, fewer than --calib-samples {samples}: calibrating on all {n}"]
