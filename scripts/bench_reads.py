"""The read path: GET /instances/{id} under load, its CPU per request and the memory it holds.

Starts `flowtracker serve` on a database (`--db`, or a fresh one filled with `--instances`
instances of 10 events each through replay's pipeline) and a bare Starlette app answering
a small JSON for the same GETs, under the same uvicorn settings. wrk sends GET
/instances/{id} for random stored ids (or, for bare, the same paths) on `--connections`
connections for `--seconds`. Prints, for each: requests/s, p50/p99, CPU ms per 1,000
requests of the server's processes (from /proc, which the machine's load changes less
than the rates), and the server's RSS after the run. Asserts nothing.
With `--against DIR` (a checkout of another commit with its own .venv), that service
reads the same database in the same run. Usage: python scripts/bench_reads.py [--db
PATH] [--instances 20000] [--seconds 10] [--against DIR]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_engine import make_lines
from bench_http import ROOT, cpu_seconds, memory_mb, server

WRK_GETS = """
local paths = {}
local index = 0
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  index = math.random(#paths)
end
function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end
"""


def fill(path: Path, lines: Path, root: Path) -> None:
    """`flowtracker replay` of `lines` into `path`, with the checkout at `root`: each
    version reads a database of its own making."""
    python = sys.executable if root == ROOT else str(root / ".venv" / "bin" / "python")
    subprocess.run(
        [python, "-m", "flowtracker", "replay", str(lines), "--db", str(path)],
        cwd=root, check=True, capture_output=True,
    )  # fmt: skip


def sample_ids(path: Path, count: int) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        total = conn.execute("SELECT MAX(seq) FROM instances").fetchone()[0]
        seqs = random.Random(7).sample(range(1, total + 1), min(count, total))
        return [
            conn.execute("SELECT id FROM instances WHERE seq = ?", (seq,)).fetchone()[0]
            for seq in seqs
        ]


def load(port: int, paths_file: Path, connections: int, seconds: float) -> dict[str, float]:
    script = paths_file.with_suffix(".lua")
    script.write_text(WRK_GETS)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s",
         str(script), f"http://127.0.0.1:{port}", "--", str(paths_file)],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip

    def number(label: str) -> float:
        line = next(line for line in out.splitlines() if line.strip().startswith(label))
        value = line.split()[-1]
        for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
            if value.endswith(unit):
                return float(value[: -len(unit)]) * scale
        return float(value)

    total = int(next(line for line in out.splitlines() if "requests in" in line).split()[0])
    return {"rate": number("Requests/sec:"), "p50": number("50%"), "p99": number("99%"),
            "requests": total}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="a flowtracker database to read (else made)")
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--against", type=Path, help="a checkout of another commit (with .venv) to run too"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        kinds = [("bare", ROOT), ("service", ROOT)]
        if args.against:
            kinds.append(("against", args.against.resolve()))
        lines = Path(directory) / "lines.jsonl"
        if args.db is None:
            lines.write_bytes(b"\n".join(make_lines(args.instances * 10, args.instances, 5)))
        dbs = {}
        for kind, root in kinds:
            dbs[kind] = args.db or Path(directory) / f"{kind}.db"
            if args.db is None and kind != "bare":
                fill(dbs[kind], lines, root)
        paths_file = Path(directory) / "paths.txt"
        ids = sample_ids(dbs["service"], 5_000)
        paths_file.write_text("".join(f"/instances/{id_}\n" for id_ in ids))
        made = f"{args.instances:,} instances of 10 events"
        print(f"GET /instances/{{id}} on {args.db or made}, {args.connections} connections, "
              f"{args.seconds:g} s each")  # fmt: skip
        for kind, root in kinds:
            mode = "bare" if kind == "bare" else "service"
            with server(mode, 1, Path(directory), [], root, db_path=dbs[kind]) as (port, pid):
                before = cpu_seconds(pid)
                found = load(port, paths_file, args.connections, args.seconds)
                after = cpu_seconds(pid)
                rss = memory_mb(pid, "VmRSS")
            cpu = sum(after.values()) - sum(before.values())
            print(
                f"  {kind:<8} {found['rate']:>8,.0f}/s  p50 {found['p50']:5.2f} ms  "
                f"p99 {found['p99']:5.2f} ms  CPU {cpu / found['requests'] * 1e6:6.1f} ms "
                f"per 1,000  RSS after {rss:5.0f} MB"
            )


if __name__ == "__main__":
    main()
