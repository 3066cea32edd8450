"""Benchmark the HTTP service against a bare Starlette app, same uvicorn, same load.

For each number of workers (1, 2) and connections (16, 64), in one run:
  bare     scripts/bare_app.py: Starlette reads the body and answers 200, no storage;
  service  `flowtracker serve --no-access-log` on a fresh database (durability full).
The load is the same for both: realistic Flow callbacks (the bench_engine generator:
authentication, custom, terminal events; 10% delivered late) with 10% duplicate
deliveries, sent by wrk with a Lua script when wrk is installed, else by scripts/loadgen.py
(asyncio keep-alive connections). Every run is bounded in time and request count.

Prints callbacks/s, p50/p99 latency, peak RSS of the server processes, the ratio
service/bare, and the CPU seconds each spent per 1,000 requests (from /proc, summed over
the server's processes: uvicorn's main process and workers, the writer), which the
machine's load changes far less than the rates. With `--against DIR` (a checkout of
another commit with its own .venv), that service runs too, in the same runs, interleaved.
Asserts nothing. Usage: python scripts/bench_http.py [--seconds 10] [--against DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
from bench_engine import make_lines

ROOT = Path(__file__).resolve().parent.parent
PATH = "/callbacks/flow"
WRK_SCRIPT = """
local bodies = {}
local index = 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  index = math.random(#bodies)
end
function request()
  index = index % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[index])
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(
    kind: str,
    workers: int,
    directory: Path,
    extra: list[str],
    root: Path = ROOT,
    db_path: Path | str | None = None,
) -> Iterator[tuple[int, int]]:
    port = free_port()
    python = sys.executable if root == ROOT else str(root / ".venv" / "bin" / "python")
    if kind == "bare":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "scripts.bare_app:app",
            "--no-access-log",
            "--workers",
            str(workers),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    else:
        command = [
            python,
            "-m",
            "flowtracker",
            "serve",
            "--no-access-log",
            "--workers",
            str(workers),
            "--port",
            str(port),
            "--db",
            str(db_path or directory / f"bench-{port}.db"),
            *extra,
        ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.1)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def memory_mb(pid: int, field: str = "VmHWM") -> float:
    """A /proc status field (VmHWM: peak, VmRSS: now) summed over the process and its
    children: uvicorn's workers, the writer process."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields["Pid"]) == pid or int(fields.get("PPid", "0")) == pid:
            total += int(fields.get(field, "0 kB").split()[0])
    return total / 1024


TICKS = os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's workers, the writer, their children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        found.append(current)
        frontier.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU of each process of the family, by role (main, worker, writer)."""
    roles: dict[str, float] = {}
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{member}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        role = "main" if member == pid else "writer" if b"writer" in command else "worker"
        roles[role] = roles.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return roles


def load_wrk(port: int, bodies_file: Path, connections: int, seconds: float) -> dict[str, float]:
    script = bodies_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{PATH}",
            "--",
            str(bodies_file),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout

    def latency(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rate": rate,
        "requests": total,
        "p50": latency("50"),
        "p90": latency("90"),
        "p99": latency("99"),
        "errors": int(non2xx.group(1)) if non2xx else 0,
    }


def load_python(
    port: int, bodies: list[bytes], connections: int, seconds: float, limit: int
) -> dict[str, float]:
    requests = [loadgen.request_bytes("127.0.0.1", port, PATH, body) for body in bodies]
    result = loadgen.run("127.0.0.1", port, requests, connections, seconds, limit)
    cuts = quantiles(result.latencies, n=100)
    errors = result.errors + sum(n for status, n in result.statuses.items() if status != 200)
    return {
        "rate": result.requests / result.seconds,
        "requests": result.requests,
        "p50": cuts[49] * 1000,
        "p99": cuts[98] * 1000,
        "errors": errors,
    }


def measure(
    kind: str,
    root: Path,
    workers: int,
    connections: int,
    directory: Path,
    extra: list[str],
    tool: str,
    args: argparse.Namespace,
    bodies: list[bytes],
    bodies_file: Path,
) -> dict[str, Any]:
    """One run of one server under the load: rates, latencies, RSS, CPU per 1,000."""
    mode = "bare" if kind == "bare" else "service"
    with server(mode, workers, directory, extra, root) as (port, pid):
        before = cpu_seconds(pid)
        if tool == "wrk":
            found: dict[str, Any] = load_wrk(port, bodies_file, connections, args.seconds)
        else:
            found = load_python(port, bodies, connections, args.seconds, args.limit)
        after = cpu_seconds(pid)
        found["rss"] = memory_mb(pid)
    per = 1_000_000 / max(1, found["requests"])  # ms per 1,000
    found["cpu"] = {role: (after[role] - before.get(role, 0.0)) * per for role in after}
    return found


def median_row(rounds: list[dict[str, Any]], kinds: list[tuple[str, Path]]) -> dict[str, Any]:
    """Each figure's median over the rounds (CPU by role too)."""
    row: dict[str, Any] = {}
    for kind, _ in kinds:
        runs = [found[kind] for found in rounds]
        row[kind] = {
            name: median(run[name] for run in runs)
            for name in ("rate", "p50", "p99", "rss", "errors")
        }
        roles = {role for run in runs for role in run["cpu"]}
        row[kind]["cpu"] = {role: median(run["cpu"].get(role, 0) for run in runs) for role in roles}
    return row


def show(
    row: dict[str, Any], kinds: list[tuple[str, Path]], workers: int, connections: int, label: str
) -> None:
    bare = row["bare"]
    for kind, _ in kinds:
        found = row[kind]
        cpu = found["cpu"]
        parts = ", ".join(f"{cpu.get(role, 0):.0f}" for role in ("main", "worker", "writer"))
        shown = f"{sum(cpu.values()):>5.0f} ({parts})"
        ratio = (
            f"rate {found['rate'] / bare['rate']:.1%}, CPU "
            f"{sum(cpu.values()) / max(1e-9, sum(bare['cpu'].values())):.2f}x"
            if kind != "bare"
            else ""
        )
        print(
            f"{label}{workers:>3} w {connections:>3} c {kind:>7} | {found['rate']:>8,.0f} "
            f"{found['p50']:>5.1f}m {found['p99']:>5.1f}m {found['rss']:>5.0f} "
            f"{found['errors']:>4.0f} | {shown:<40} | {ratio}"
        )


def deliveries(count: int) -> list[bytes]:
    """`count` callbacks: 10% are repeats of earlier ones (duplicates), 10% late."""
    rng = random.Random(3)
    distinct = make_lines(int(count * 0.9), max(1, count // 10), seed=3)  # 9 per instance
    repeated = [distinct[rng.randrange(len(distinct))] for _ in range(count - len(distinct))]
    mixed = distinct + repeated
    rng.shuffle(repeated)
    for body in repeated:
        mixed.insert(rng.randrange(len(mixed)), body)
    return mixed[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="per run")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--limit", type=int, default=500_000, help="requests per run at most")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--service-args",
        default="",
        help="more flags for flowtracker serve, with =: --service-args=--no-callback-log",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds; with more, their medians"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="a checkout of another commit (with .venv) whose service runs in the same runs",
    )
    args = parser.parse_args()
    extra = args.service_args.split()
    tool = (
        "wrk" if args.tool == "wrk" or (args.tool == "auto" and shutil.which("wrk")) else "python"
    )
    bodies = deliveries(200_000)
    print(
        f"load: {tool}; {len(bodies):,} Flow callbacks cycled (10% duplicates, ~10% late); "
        f"{args.seconds:g} s per run; service durability full"
        + (f"; service flags: {args.service_args}" if extra else "")
        + (f"; against {args.against}" if args.against else "")
    )
    kinds = [("bare", ROOT), ("service", ROOT)]
    if args.against:
        kinds.append(("against", args.against.resolve()))
    print(
        f"{'':>13} {'what':>7} | {'req/s':>8} {'p50':>6} {'p99':>6} {'RSS':>5} {'err':>4} | "
        f"{'CPU ms per 1,000 requests: all (main, workers, writer)':<40} | {'of bare':>7}"
    )
    with tempfile.TemporaryDirectory() as directory:
        bodies_file = Path(directory) / "bodies.jsonl"
        bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        for workers in map(int, args.workers.split(",")):
            for connections in map(int, args.connections.split(",")):
                rounds = []
                for _ in range(args.rounds):
                    row = {}
                    for kind, root in kinds:
                        row[kind] = measure(
                            kind, root, workers, connections, Path(directory), extra, tool,
                            args, bodies, bodies_file,
                        )  # fmt: skip
                    rounds.append(row)
                    show(row, kinds, workers, connections, "")
                if args.rounds > 1:
                    show(median_row(rounds, kinds), kinds, workers, connections, "median ")
    print("latencies in ms; RSS = peak MB of the server processes; err = non-200 answers")


if __name__ == "__main__":
    main()
