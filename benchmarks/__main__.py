"""`python -m benchmarks [--quick] [--only NAME,...]`: run every benchmark, rewrite RESULTS.md."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import Row, machine

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))


def render(results: dict[str, list[Row]], errors: dict[str, str], command: str,
           seconds: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.  ",
        f"Command: `{command}` ({seconds:.0f} s).  ",
        "Each row measures adapt and its peer side by side in the same run; `ratio` says which "
        "way it is taken.",
        "",
    ]
    for name, rows in results.items():
        lines += [f"## {name.removeprefix('bench_')}", "",
                  "| metric | size | adapt | peer | peer is | unit | ratio | goal | notes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            ratio = "" if r.ratio is None else f"{r.ratio:g} ({r.ratio_note})"
            lines.append(
                f"| {r.metric} | {r.size} | {_fmt(r.adapt)} | {_fmt(r.peer)} | {r.peer_name} "
                f"| {r.unit} | {ratio} | {r.goal} | {r.notes} |")
        lines.append("")
    for name, err in errors.items():
        lines += [f"## {name.removeprefix('bench_')}: failed", "", "```", err.strip(), "```", ""]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write raw rows as JSON here")
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        wanted = {f"bench_{n.removeprefix('bench_')}" for n in args.only.split(",")}
        names = [n for n in names if n in wanted]
    results: dict[str, list[Row]] = {}
    errors: dict[str, str] = {}
    start = time.perf_counter()
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = importlib.import_module(f"benchmarks.{name}").run(args.quick)
        except Exception:
            errors[name] = traceback.format_exc()
            print(errors[name], file=sys.stderr)
    command = "python -m benchmarks" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "")
    args.out.write_text(render(results, errors, command, time.perf_counter() - start))
    if args.json:
        args.json.write_text(json.dumps(
            {k: [r.to_dict() for r in v] for k, v in results.items()}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
