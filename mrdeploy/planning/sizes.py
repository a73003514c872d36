"""The image sizes a plan is made from: a folder of images (headers only, read as the runtime serves
them) or a text file of ``HxW [COUNT]`` lines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mrdeploy.errors import InputError
from mrdeploy.runtime.images import IMAGE_SUFFIXES, image_files, image_size  # the one image path

HW = tuple[int, int]


def sizes_from(path: str | os.PathLike) -> list[HW]:
    """Image sizes (h, w): of every image under DIR (recursively; only headers are read; EXIF orientation
    applied, as the runtime does), or from a text file with one ``HxW`` per line (optionally
    ``HxW COUNT``; ``#`` starts a comment)."""
    path = Path(path)
    if path.is_dir():
        return _sizes_from_dir(path)
    if not path.is_file():
        raise InputError(f"--sizes-from {path}: no such file or directory")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _sizes_from_images([path], path)
    return _sizes_from_text(path)


def _sizes_from_dir(root: Path) -> list[HW]:
    files = image_files(root)
    if not files:
        raise InputError(
            f"--sizes-from {root}: expected image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder, found none"
        )
    return _sizes_from_images(files, root)


def _sizes_from_images(files: Sequence[Path], where: Path) -> list[HW]:
    sizes, bad = [], []
    for f in files:
        try:
            sizes.append(image_size(f))  # header only, EXIF orientation applied as the runtime serves it
        except InputError:
            bad.append(f)
    if not sizes:
        raise InputError(f"--sizes-from {where}: none of the {len(files)} image files could be read (first: {bad[0]})")
    return sizes


def _sizes_from_text(path: Path) -> list[HW]:
    sizes: list[HW] = []
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        try:
            h, _, w = parts[0].lower().partition("x")
            hw = (int(h), int(w))
            count = int(parts[1]) if len(parts) > 1 else 1
            if len(parts) > 2 or hw[0] <= 0 or hw[1] <= 0 or count < 0:
                raise ValueError
        except (ValueError, IndexError):
            raise InputError(
                f"{path}:{lineno}: expected HxW or HxW COUNT (e.g. 480x640 or 480x640 12), got {raw.strip()!r}"
            ) from None
        sizes.extend([hw] * count)
    if not sizes:
        raise InputError(f"{path}: expected lines of HxW sizes, found none")
    return sizes
