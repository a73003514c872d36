"""The demo's machinery: run a command live (through a pseudo-terminal, so progress bars draw as for a
user) and turn the reports it writes into the README's tables. Used by examples/demo.py."""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stream(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` from the repository root, echoing its output live (indented), and return the exit
    code and the output. On POSIX the command writes to a pseudo-terminal, so it draws its progress
    bars as it would for a user; the returned text keeps each bar line in its final state."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        import pty
    except ImportError:  # not POSIX: a pipe, no progress bars
        pty = None
    if pty is None:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        assert proc.stdout is not None
        text = []
        for line in proc.stdout:
            text.append(line)
            print(f"  {line}", end="", flush=True)
        return proc.wait(), final_lines("".join(text))
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    chunks, line_start = [], True
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not data:
            break
        text = decoder.decode(data).replace("\r\n", "\n")
        chunks.append(text)
        shown = []
        for ch in text:
            if line_start and ch not in "\r\n":
                shown.append("  ")
            shown.append(ch)
            line_start = ch in "\r\n"
        sys.stdout.write("".join(shown))
        sys.stdout.flush()
    os.close(master)
    return proc.wait(), final_lines("".join(chunks))


def final_lines(text: str) -> str:
    """Output as a user would see it at the end: each line's last state after carriage returns."""
    lines = [line.split("\r")[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def section(md: str, heading: str, prefix: str) -> list[str]:
    """The lines of ``md`` from ``heading`` (exclusive) to the next '## ', image links made relative."""
    out, on = [], False
    for line in md.splitlines():
        if line.startswith(heading):
            on = True
            continue
        if on and line.startswith("## "):
            break
        if on:
            if line.startswith("![") and "](" in line:
                alt, _, target = line.partition("](")
                line = f"{alt}]({prefix}{target}"
            out.append(line)
    return out


def outside_sizes(parity_json: Path) -> list[str]:
    """The sizes no profile contains in a parity report (served by the policy, or refused)."""

    if not parity_json.is_file():
        return []
    rows = json.loads(parity_json.read_text())["rows"]
    return list(dict.fromkeys(r["size"] for r in rows if r["target"] == "bundle" and not r["in_profile"]))


def policy_table(main_json: Path, other_json: Path) -> list[str]:
    """Accuracy and cosine at the sizes outside every profile under the bundle's policy and another."""

    from mrdeploy.report import fmt, md_table

    main, other = (json.loads(p.read_text()) for p in (main_json, other_json))

    def served(report, size):
        return next((r for r in report["rows"] if r["size"] == size and r["target"] == "bundle"
                     and (r["served"] or r["profile"] is None)), None)

    metric = "accuracy" if main.get("labeled") else "top1_agreement"
    rows = []
    for size in other["sizes"]:
        ref = next((r for r in main["rows"] if r["size"] == size and r["target"] == "onnx"), None)
        cells = [size, fmt(ref.get(metric) if ref else None)]
        for report in (main, other):
            r = served(report, size)
            if r is None or r["profile"] is None:
                cells += ["refused", "-"]
            else:
                cells += [f"{fmt(r.get(metric))} ({r['profile']}, {r['action']})", fmt(r.get("cosine"), 4)]
        rows.append(cells)
    name = "top-1 acc" if main.get("labeled") else "top-1 agr"
    a, b = main["policy"], other["policy"]
    both = [(served(main, size), served(other, size)) for size in other["sizes"]]
    both = [(x[metric], y[metric]) for x, y in both if x and y and x["profile"] and y["profile"]
            and x.get(metric) is not None and y.get(metric) is not None]
    summary = ""
    if both:
        summary = (f" Over the {len(both)} sizes both serve, mean {name}: `{a}` "
                   f"{sum(x for x, _ in both) / len(both):.3f}, `{b}` {sum(y for _, y in both) / len(both):.3f}.")
    return [
        f"The bundle's policy is `{a}`; `mrdeploy parity --policy {b}` measures the other choice "
        f"(parity-{b}/parity.md; `pad` fills the bottom/right with zeros, the mean colour after normalization; "
        f"`resize` resamples to the nearest profile's opt).{summary}",
        "",
        md_table(["size", f"onnx {name}", f"{a}: {name}", f"{a}: cosine", f"{b}: {name}", f"{b}: cosine"],
                 rows, "lrrrrr"),
    ]


def bundle_table(manifest_path: Path) -> list[str]:
    """Each profile's range and precision, with the reason `--precision auto` gave for its choice."""

    from mrdeploy.report import md_table
    from mrdeploy.runtime.profiles import Profile

    m = json.loads(manifest_path.read_text())
    rows = []
    for p in m["profiles"]:
        meas = p.get("measurements") or {}
        cal = p.get("calibration") or {}
        reason = meas.get("reason") or ("-" if p["precision"] != "int8" else f"{cal.get('method', '')} calibration")
        rows.append([p["name"], Profile.from_dict(p).describe().split("=", 1)[1], p["backend"], p["precision"], reason])
    return [f"Policy `{m['policy']}` for sizes outside every profile.", "",
            md_table(["profile", "range (min-max@opt)", "backend", "precision", "why (precision auto)"], rows)]


def bench_intro(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("- ")]
