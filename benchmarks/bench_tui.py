"""TUI open time: the paged adapter list vs the same list loading every row at once.

Both sides run the real app headless (Textual's run_test at 80x24) on the same SQLite registry
and stop the clock when the first rows are on screen. Versions are inserted in bulk, without
files (the list reads rows only).

    python -m benchmarks.bench_tui            # 10,000 versions
    python -m benchmarks.bench_tui --quick    # 2,000 versions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, machine


async def _open_once(home: Path, page_size: int) -> float:
    from registry.registry import Registry
    from tui import make_app

    registry = Registry(home=home)
    started = time.perf_counter()
    app = make_app(registry, page_size=page_size)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.table  # type: ignore[attr-defined]
        while not table.row_count:
            await pilot.pause(0.005)
        opened = time.perf_counter() - started
    registry.close()
    return opened


def open_time(home: Path, page_size: int, repeats: int) -> float:
    """Median seconds from building the app to the first rows on screen."""
    return statistics.median(asyncio.run(_open_once(home, page_size)) for _ in range(repeats))


def run(quick: bool) -> list[Row]:
    from benchmarks.bench_core import populate  # the benchmarks' own fill, not the tests'
    from tui.version_list import PAGE

    versions = 2_000 if quick else 10_000
    repeats = 3 if quick else 5
    rows: list[Row] = []
    for per_adapter in (1, 10):
        with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
            home = Path(tmp)
            populate(home, versions, per_adapter=per_adapter)
            adapters = versions // per_adapter
            paged = open_time(home, PAGE, repeats)
            everything = open_time(home, versions, repeats)
            rows.append(Row(
                "tui", f"open to first rows ({adapters} adapters)", paged, everything,
                "same list, every row loaded at once", "s", paged / everything,
                "adapt / peer (lower is faster)", "< 1 s with 10,000 versions",
                f"{versions} versions, {per_adapter} per adapter, 80x24 headless",
                f"median of {repeats}; page {PAGE} rows; {machine()}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in run(args.quick):
        print(json.dumps(row.to_dict()))


if __name__ == "__main__":
    main()
