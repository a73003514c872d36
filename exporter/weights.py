"""Weights stored once: the graphs of one bundle share one weights file.

A bundle holds its source model and one graph per profile. Specializing a profile changes the graph and
rarely the weights: the conv kernels and matrices of three fp32 profiles, of their OpenVINO IRs and of
the source are the same bytes, and an int8 profile's quantized weights are the same for every profile
(per-channel scales come from the weights alone). Built one by one, each file carries its own copy. This
pass, run once on a finished bundle directory before its manifest is written, keeps one copy of each
tensor in ``profiles/weights.bin``, where the format allows it:

- ONNX graphs (the source ``model.onnx`` and every ``.onnx`` profile): a tensor that two or more graphs
  (or IRs) hold moves to ONNX external data in the shared file (offset and length recorded in the graph;
  ONNX Runtime reads it relative to the graph). Tensors only one graph holds, and small ones, stay inside.
- OpenVINO IRs (``.xml`` + ``.bin`` per profile): every constant moves to the shared file, once, and the
  ``.xml`` records its offset there; the engine reads the IR with that file as its weights. A constant and
  an ONNX tensor with the same bytes (a conv kernel: both are the raw little-endian array) are one copy.

Numbers are untouched: the same bytes, read from elsewhere. Each graph that reads the shared file lists it
in ``files`` with its sha256 (the profile's entry, or ``manifest.source``), so the runtime verifies it as
it verifies the graph. Other artifact formats (TensorRT plans) are left as they are.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import replace
from pathlib import Path

from mrdeploy.runtime.manifest import ProfileEntry, sha256_file

WEIGHTS = "profiles/weights.bin"
MIN_BYTES = 1024  # smaller ONNX tensors stay inside their graph: a shared copy saves less than it costs
ALIGN = 64  # offsets in the shared file are multiples of this


def share_weights(tmp: Path, source: dict, entries: list[ProfileEntry], notes: list[str]) -> tuple[dict, list]:
    """Rewrite the bundle in ``tmp`` so that each tensor is stored once; returns the source reference and
    the profile entries with their new sha256 and ``files`` (unchanged when nothing is shared)."""
    import onnx

    graphs, irs = _onnx_graphs(source, entries), _irs(entries)
    if len(graphs) + len(irs) < 2:
        return source, entries
    onnx_models = {g: onnx.load(str(tmp / g), load_external_data=False) for g in graphs}
    tensors = {g: _large_tensors(m) for g, m in onnx_models.items()}  # graph -> [(TensorProto, digest)]
    ir_trees = {xml: ET.parse(tmp / xml) for xml, _ in irs}
    ir_consts = {xml: _ir_constants(ir_trees[xml], (tmp / binary).read_bytes()) for xml, binary in irs}
    holders: Counter[str] = Counter()  # digest -> how many graphs hold it
    for held in [*tensors.values(), *ir_consts.values()]:
        holders.update({digest for _, digest, *_ in held})
    shared = {d for d, n in holders.items() if n >= 2}
    if not shared and not irs:
        return source, entries
    if (tmp / WEIGHTS).exists() and WEIGHTS not in {b for _, b in irs}:  # another backend's file of that name
        notes.append(f"weights: not shared: {WEIGHTS} is already a file of this bundle")
        return source, entries

    before = sum((tmp / b).stat().st_size for _, b in irs) + sum(len(t.raw_data) for g in tensors.values()
                                                                  for t, d in g if d in shared)
    store = _Store(tmp / WEIGHTS)
    with store:
        for g, held in tensors.items():
            location = os.path.relpath(WEIGHTS, os.path.dirname(g) or ".").replace(os.sep, "/")
            for t, digest in held:
                if digest in shared:
                    offset, length = store.put(digest, t.raw_data), len(t.raw_data)
                    t.ClearField("raw_data")
                    t.data_location = onnx.TensorProto.EXTERNAL
                    del t.external_data[:]
                    for key, value in (("location", location), ("offset", offset), ("length", length)):
                        t.external_data.add(key=key, value=str(value))
        for held in ir_consts.values():
            for node, digest, blob in held:
                node.set("offset", str(store.put(digest, blob)))
    readers = [g for g, held in tensors.items() if any(d in shared for _, d in held)]
    for g in readers:  # the others are left as they are, byte for byte (their sha256 stands)
        onnx.save(onnx_models[g], str(tmp / g))
    for xml, tree in ir_trees.items():
        tree.write(tmp / xml, encoding="utf-8", xml_declaration=True)
    for _, binary in irs:
        if binary != WEIGHTS:  # an OpenVINO profile named "weights": its own .bin was read, then rewritten
            (tmp / binary).unlink()
    weights = {"path": WEIGHTS, "sha256": sha256_file(tmp / WEIGHTS)}
    notes.append(f"weights: {len(store.offsets)} tensors stored once in {WEIGHTS}, read by {len(readers)} ONNX "
                 f"graphs and {len(irs)} OpenVINO IRs ({(before - store.size) / 1e6:.1f} MB saved)")
    if source["artifact"] in readers:
        source = {**source, "sha256": sha256_file(tmp / source["artifact"]), "files": [weights]}
    ir_names = {xml for xml, _ in irs}
    out = []
    for e in entries:
        if e.artifact in readers:
            e = replace(e, sha256=sha256_file(tmp / e.artifact), files=[weights])
        elif e.artifact in ir_names:
            e = replace(e, sha256=sha256_file(tmp / e.artifact),
                        files=[weights if f["path"].endswith(".bin") else f for f in e.files])
        out.append(e)
    return source, out


def _onnx_graphs(source: dict, entries: list[ProfileEntry]) -> list[str]:
    """The bundle's ONNX files that carry their own weights, each once."""
    graphs = [source["artifact"]] if source["artifact"].endswith(".onnx") and not source.get("files") else []
    for e in entries:
        if e.artifact.endswith(".onnx") and not e.files and e.artifact not in graphs:
            graphs.append(e.artifact)
    return graphs


def _irs(entries: list[ProfileEntry]) -> list[tuple[str, str]]:
    """(xml, bin) of the bundle's OpenVINO IRs, each once."""
    irs = []
    for e in entries:
        bins = [f["path"] for f in e.files if f["path"].endswith(".bin")]
        if e.artifact.endswith(".xml") and len(bins) == 1 and (e.artifact, bins[0]) not in irs:
            irs.append((e.artifact, bins[0]))
    return irs


def _large_tensors(model) -> list:
    from onnx import TensorProto, numpy_helper

    out = []
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            continue
        if not t.HasField("raw_data"):  # typed fields (float_data, ...): the same tensor as raw bytes
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
        if len(t.raw_data) >= MIN_BYTES:
            out.append((t, hashlib.sha256(t.raw_data).hexdigest()))
    return out


def _ir_constants(tree, data: bytes) -> list:
    """(data element, digest, bytes) of every Const layer of an IR whose constants are in ``data``."""
    out = []
    for layer in tree.getroot().iter("layer"):
        node = layer.find("data")
        if layer.get("type") != "Const" or node is None or node.get("offset") is None:
            continue
        start, size = int(node.get("offset")), int(node.get("size"))
        blob = data[start:start + size]
        out.append((node, hashlib.sha256(blob).hexdigest(), blob))
    return out


class _Store:
    """The shared file: each distinct blob written once, at an aligned offset."""

    def __init__(self, path: Path):
        self.path = path
        self.offsets: dict[str, tuple[int, int]] = {}
        self.size = 0

    def __enter__(self):
        self.f = open(self.path, "wb")
        return self

    def __exit__(self, *exc):
        self.f.close()

    def put(self, digest: str, blob: bytes) -> int:
        if digest not in self.offsets:
            self.f.write(b"\0" * (-self.size % ALIGN))
            self.size += -self.size % ALIGN
            self.offsets[digest] = (self.size, len(blob))
            self.f.write(blob)
            self.size += len(blob)
        return self.offsets[digest][0]
