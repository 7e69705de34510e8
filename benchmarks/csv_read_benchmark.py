"""Time and peak memory of reading and validating a large long-format CSV (issue 6).

Usage:

    python benchmarks/csv_read_benchmark.py --output reports/csv_read_benchmark.md   # ~1 min
    python benchmarks/csv_read_benchmark.py --rows 100000 --series 2000 --repeats 1 \\
        --output /tmp/smoke.md                                                        # smoke run

It writes (seeded) a CSV of ``--rows`` rows and ``--series`` series of irregular lengths
(0.4 to 1.6 times the mean length, 20 to 80 rows at the defaults): string ids, ISO date-times
to the second at irregular gaps (``--time-kind float`` for numbers), three numeric channels with
10% of the cells empty, rows shuffled across and within series. Then each stage runs in a fresh
subprocess, ``--repeats`` times, one at a time:

- ``read``: `read_series_csv(path)` (parse, validate, sort), checked against the generator's
  row and series counts;
- ``setup``: `CSVDataModule(path).setup("fit")`, i.e. the read plus what training needs before
  its first batch (series split, normalisation, segments).

Wall time is `time.perf_counter` around the call. Peak memory is the peak resident set of the
child (`VmHWM` in /proc/self/status; `ru_maxrss` is reported too), and its growth over the
resident set after the imports. Targets: at most 15 s and under 2 GB per stage.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from procmem import status_kib

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 0
CHANNELS = ("x1", "x2", "x3")
MISSING = 0.1  # share of empty value cells
TIME_TARGET_S = 15.0
MEMORY_TARGET_B = 2 * 1024**3  # "under 2 GB", read as 2 GiB
STAGES = {
    "read": "`read_series_csv(path)`",
    "setup": "`CSVDataModule(path).setup('fit')` (includes the read)",
}

__all__ = ["CHANNELS", "generate_frame", "main", "series_lengths", "write_csv"]


# ---------------------------------------------------------------------------- the data
def series_lengths(n_rows: int, n_series: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_series]`` int64 lengths in ``[0.4 m, 1.6 m]`` (``m = n_rows / n_series``, at least
    2) that sum to exactly ``n_rows``.

    Raises:
        ValueError: if ``n_rows`` is below ``2 * n_series``.
    """
    if n_rows < 2 * n_series:
        raise ValueError(f"need at least two rows per series; got {n_rows} for {n_series}.")
    mean = n_rows / n_series
    lo, hi = max(2, int(np.ceil(0.4 * mean))), max(2, int(np.floor(1.6 * mean)))
    lengths = rng.integers(lo, hi + 1, n_series).astype(np.int64)
    while (gap := n_rows - int(lengths.sum())) != 0:  # nudge random series by one row
        room = np.flatnonzero(lengths < hi) if gap > 0 else np.flatnonzero(lengths > lo)
        pick = rng.choice(room, size=min(abs(gap), len(room)), replace=False)
        lengths[pick] += np.sign(gap)
    return lengths


def generate_frame(
    n_rows: int, n_series: int, time_kind: str = "datetime", seed: int = SEED
) -> pd.DataFrame:
    """A seeded long-format frame ``series_id, time, x1, x2, x3`` with shuffled rows.

    Series ``s`` is named ``"site-<s>"`` (zero-padded), starts somewhere in 2000-2009 and has
    strictly increasing, irregular times: gaps of 1 hour to 30 days, to the second. ``time`` is
    an ISO string (``time_kind="datetime"``, e.g. ``2003-04-05T06:07:08``) or a float in days
    since 2000-01-01 (``"float"``, 6 decimals). Values are random walks with 4 decimals; each
    cell is empty (NaN) with probability `MISSING`. The rows of all series are shuffled
    together, so neither series nor times are in order.

    Args:
        n_rows: total rows (at least two per series).
        n_series: number of series.
        time_kind: ``"datetime"`` or ``"float"``.
        seed: seeds everything.

    Returns:
        The frame, in the row order to be written.
    """
    if time_kind not in ("datetime", "float"):
        raise ValueError(f"time_kind must be 'datetime' or 'float'; got {time_kind!r}.")
    rng = np.random.default_rng(seed)
    lengths = series_lengths(n_rows, n_series, rng)  # (S,)
    code = np.repeat(np.arange(n_series), lengths)  # (N,) series of each row, grouped
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (S,) first row of each series
    gaps = rng.integers(3600, 30 * 86400 + 1, n_rows)  # (N,) seconds since the previous row
    gaps[first] = rng.integers(0, 10 * 365 * 86400, n_series)  # start after 2000-01-01
    seconds = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], lengths)  # (N,)
    steps = rng.normal(size=(n_rows, len(CHANNELS)))  # (N, D)
    steps[first] += 10 * rng.normal(size=(n_series, len(CHANNELS)))  # a level per series
    walk = np.cumsum(steps, axis=0)
    walk -= np.repeat(walk[first] - steps[first], lengths, axis=0)  # restart at each series
    values = np.round(walk, 4)
    values[rng.random(values.shape) < MISSING] = np.nan
    if time_kind == "datetime":
        stamps = np.datetime64("2000-01-01T00:00:00", "s") + seconds.astype("timedelta64[s]")
        times: np.ndarray = np.datetime_as_string(stamps, unit="s").astype(object)
    else:
        times = np.round(seconds / 86400, 6)
    width = len(str(n_series - 1))
    names = np.array([f"site-{s:0{width}d}" for s in range(n_series)], dtype=object)
    order = rng.permutation(n_rows)  # shuffle rows across and within series
    frame = pd.DataFrame({"series_id": names[code], "time": times})
    for d, name in enumerate(CHANNELS):
        frame[name] = values[:, d]
    return frame.iloc[order].reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: Path) -> int:
    """Write ``frame`` as CSV (floats as written by `generate_frame`, NaN as an empty cell).

    Returns:
        The file size in bytes.
    """
    frame.to_csv(path, index=False, na_rep="", float_format="%.6f")
    return path.stat().st_size


def write_and_describe(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Generate the benchmark file at ``path`` and describe what a correct read must give."""
    frame = generate_frame(args.rows, args.series, args.time_kind, args.seed)
    start = time.perf_counter()
    size = write_csv(frame, path)
    lengths = frame["series_id"].value_counts()
    return {
        "rows": len(frame),
        "series": int(frame["series_id"].nunique()),
        "min_len": int(lengths.min()),
        "max_len": int(lengths.max()),
        "missing": [int(frame[c].isna().sum()) for c in CHANNELS],
        "example_time": str(frame["time"].iloc[0]),
        "bytes": size,
        "write_s": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------- the child
def child(stage: str, path: Path) -> dict[str, Any]:
    """Run one stage on ``path`` in this (fresh) process and measure it.

    Returns:
        ``seconds``, ``peak_kib`` (`VmHWM`), ``maxrss_kib`` (`ru_maxrss`), ``base_kib`` (`VmRSS`
        after the imports), and what was read: ``n_series``, ``n_rows``, ``missing``.
    """
    if stage == "read":
        from latentode.data.csv import read_series_csv

        base = status_kib("VmRSS")
        start = time.perf_counter()
        table = read_series_csv(path)
        seconds = time.perf_counter() - start
        extra: dict[str, Any] = {}
    elif stage == "setup":
        import torch

        from latentode.data.csv_module import CSVDataModule

        torch.set_num_threads(1)
        base = status_kib("VmRSS")
        start = time.perf_counter()
        dm = CSVDataModule(str(path))
        dm.setup("fit")
        seconds = time.perf_counter() - start
        assert dm.table is not None
        table = dm.table
        extra = {"segments": [len(dm.train_segments), len(dm.val_segments), len(dm.test_segments)]}
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {
        "stage": stage,
        "seconds": seconds,
        "peak_kib": status_kib("VmHWM"),
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "base_kib": base,
        "n_series": table.n_series,
        "n_rows": len(table.times),
        "missing": [int(v) for v in np.isnan(table.values).sum(axis=0)],
        **extra,
    }


def run_child(stage: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`child` (or, for ``"write"``, `write_and_describe`) in a fresh interpreter; its last
    stdout line is the JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--data", str(path)]
    cmd += ["--rows", str(args.rows), "--series", str(args.series)]
    cmd += ["--time-kind", args.time_kind, "--seed", str(args.seed)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class Stage:
    """The repeats of one stage."""

    name: str
    runs: list[dict[str, Any]]

    def median(self, key: str) -> float:
        """Median of ``key`` over the repeats."""
        return statistics.median(float(r[key]) for r in self.runs)

    def spread(self, key: str) -> tuple[float, float]:
        """(min, max) of ``key`` over the repeats."""
        vals = [float(r[key]) for r in self.runs]
        return min(vals), max(vals)


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def _loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _version(package: str) -> str:
    """An installed distribution's version, without importing it (keeps this process small)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(argv: list[str]) -> list[str]:
    """Header lines: command, date, versions, CPU, git state."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), "-"
    )
    git = ["git", "-C", str(REPO_ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "latentode/data"], capture_output=True, text=True
    ).stdout.strip()
    with open("/proc/meminfo") as fh:
        total_kib = int(fh.readline().split()[1])
    return [
        f"- command: `{shlex.join(['python', *argv])}` (interpreter `{sys.executable}`)",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- git: {commit.stdout.strip() or '-'}, "
        f"{'uncommitted changes' if dirty else 'no uncommitted changes'} under latentode/data",
        f"- Python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, "
        f"torch {_version('torch')}, pytorch-lightning {_version('pytorch-lightning')}, "
        f"pyarrow {_version('pyarrow')}",
        f"- CPU: {model}, {platform.machine()}, os.cpu_count() = {os.cpu_count()}; "
        f"memory {total_kib / 1024**2:.1f} GiB",
    ]


def render(
    header: list[str], data: dict[str, Any], stages: list[Stage], args: argparse.Namespace
) -> list[str]:
    """The report's markdown lines."""
    title = f"# CSV read benchmark: {data['rows']:,} rows, {data['series']:,} series"
    lines = [title, "", *header, ""]
    lines += [
        "## Data",
        "",
        f"- {data['rows']:,} rows, {data['series']:,} series of {data['min_len']}-"
        f"{data['max_len']} rows (seed {args.seed}), columns `series_id, time, "
        f"{', '.join(CHANNELS)}`; file size {data['bytes'] / 1024**2:.1f} MiB "
        f"(written in {data['write_s']:.1f} s)",
        f"- time: {'ISO date-times to the second' if args.time_kind == 'datetime' else 'floats'}"
        f", e.g. `{data['example_time']}`; irregular gaps of 1 hour to 30 days",
        f"- missing cells per channel: {', '.join(f'{m:,}' for m in data['missing'])} "
        f"({100 * MISSING:.0f}% each); rows shuffled across and within series",
        "",
        "## Results",
        "",
        f"Each stage ran {args.repeats} time{'s' if args.repeats > 1 else ''}, each in a fresh "
        "subprocess, one at a time; median (min-max). Peak RSS is the child's `VmHWM` (the whole "
        "process: interpreter, imports, data); 'growth' subtracts its `VmRSS` after the imports. "
        "The file was in the page cache (just written, by another subprocess).",
        "",
        "| stage | wall time | peak RSS | growth over imports | time <= 15 s | peak < 2 GiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for st in stages:
        t, (t_lo, t_hi) = st.median("seconds"), st.spread("seconds")
        p, (p_lo, p_hi) = st.median("peak_kib"), st.spread("peak_kib")
        g = st.median("peak_kib") - st.median("base_kib")
        lines.append(
            f"| {STAGES[st.name]} | {t:.2f} s ({t_lo:.2f}-{t_hi:.2f}) | {_mib(p)} "
            f"({p_lo / 1024:,.0f}-{p_hi / 1024:,.0f}) | {_mib(g)} | "
            f"{'met' if t_hi <= TIME_TARGET_S else 'MISSED'} | "
            f"{'met' if p_hi * 1024 < MEMORY_TARGET_B else 'MISSED'} |"
        )
    lines += [
        "",
        "A target counts as met when the worst repeat meets it. Checks: every repeat read "
        f"{data['series']:,} series and {data['rows']:,} rows with the generator's missing "
        "counts.",
        "",
        "## Notes",
        "",
    ]
    lines.append(
        "- The read is vectorised: pandas' C parser (this pandas splits big files across "
        "threads), `to_numeric` / `to_datetime` on whole columns, `factorize` for the series ids, "
        "one `lexsort` by (series, time), `np.diff` for duplicates and `bincount` for lengths and "
        "short series. Its only Python-level loops are pandas' element-wise `str.strip` of the "
        "time and id columns (string columns are Python objects without pyarrow; about 0.1 s "
        "per million) and one `str()` per series id. `setup` then builds its segments series "
        "by series in Python (`whole_series`, `forecast_segment`)."
    )
    by = {st.name: st for st in stages}
    if "read" in by and "setup" in by:
        after = by["setup"].median("seconds") - by["read"].median("seconds")
        segs = by["setup"].runs[0].get("segments", [0, 0, 0])
        lines.append(
            f"- setup after the read: about {after:.2f} s (difference of medians) for "
            f"{segs[0]:,} training segments (whole series) and {segs[1]:,} / {segs[2]:,} "
            "validation / test forecasts."
        )
    for st in stages:
        lines.append(
            f"- {st.name}: `ru_maxrss` median {_mib(st.median('maxrss_kib'))}, `VmHWM` "
            f"{_mib(st.median('peak_kib'))}; RSS after the imports {_mib(st.median('base_kib'))}."
        )
    lines.append(
        "- `ru_maxrss` is a cross-check: on Linux it starts from the parent's peak (carried "
        "across fork + exec), so the parent imports neither torch nor latentode and generates "
        "the file in a subprocess of its own."
    )
    lines.append(
        f"- load average (1/5/15 min) at start: {data['load_start']}; at end: "
        f"{data['load_end']}, on {os.cpu_count()} CPUs (the end value includes this benchmark's "
        "own load, about one busy core; other work may share the machine)."
    )
    return [*lines, ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("reports/csv_read_benchmark.md"))
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the CSV")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--time-kind", choices=("datetime", "float"), default="datetime")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--stages", default="read,setup", help="comma-separated: read,setup")
    parser.add_argument("--child", choices=[*STAGES, "write"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate the file, run the stages in fresh subprocesses, write the report."""
    args = parse_args(argv)
    if args.child == "write":
        print(json.dumps(write_and_describe(args, args.data)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.data)))
        return
    start = time.perf_counter()
    load_start = _loadavg()
    header = environment(sys.argv if argv is None else [sys.argv[0], *argv])
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "series.csv"
        data = run_child("write", path, args)  # in a child too: keeps this process small
        size = data["bytes"]
        print(f"{time.perf_counter() - start:6.1f} s  wrote {path} ({size / 1024**2:.1f} MiB)")
        stages = []
        for name in args.stages.split(","):
            runs = []
            for i in range(args.repeats):
                r = run_child(name, path, args)
                ok = (r["n_series"], r["n_rows"], r["missing"])
                if ok != (data["series"], data["rows"], data["missing"]):
                    raise RuntimeError(f"{name} read {ok}, expected {data}")
                runs.append(r)
                print(
                    f"{time.perf_counter() - start:6.1f} s  {name} #{i + 1}: "
                    f"{r['seconds']:.2f} s, peak {r['peak_kib'] / 1024:.0f} MiB",
                    flush=True,
                )
            stages.append(Stage(name, runs))
    data["load_start"], data["load_end"] = load_start, _loadavg()
    header.append(f"- benchmark wall time: {time.perf_counter() - start:.0f} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(render(header, data, stages, args)))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
