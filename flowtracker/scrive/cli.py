"""`flowtracker simulate`: the command line of the simulator (options and wiring only)."""

from __future__ import annotations

import ipaddress
import os
import sys

import click

from flowtracker.scrive import simulate
from flowtracker.settings import Settings, SettingsError


@click.command(name="simulate")
@click.option("--url", required=True, help="The tracker's base URL: http://HOST:PORT.")
@click.option(
    "--instances",
    default=100,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Flow instances to simulate, each with 1 to 3 documents.",
)
@click.option(
    "--duplicates",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of callbacks delivered again after the tracker stored them "
    "(Scrive missed the 2xx).",
)
@click.option(
    "--reorder",
    default=0.3,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of callbacks held back by Scrive's retries until after a later callback "
    "of their instance or document.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="The same seed sends the same callbacks in the same order.  [default: random, printed]",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="At most this many requests a second.  [default: as fast as --connections allow]",
)
@click.option(
    "--connections",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Requests in flight at once. With 1 the tracker sees the planned order, and "
    "--check also compares out-of-order flags and anomaly counts.",
)
@click.option(
    "--time-scale",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Scrive's retry waits (5 m, 10 m, 30 m, 1 h, 2 h, 4 h, 4 h, 4 h, 8 h) are divided "
    "by this: 3600 makes the whole 23 h 45 min take 24 s.",
)
@click.option(
    "--token",
    envvar="FLOWTRACKER_CALLBACK_TOKEN",
    show_envvar=True,
    help="The tracker's callback token: ?token= on Flow callbacks, the HTTP Basic "
    "password on document callbacks.  [default: none]",
)
@click.option(
    "--read-token",
    envvar="FLOWTRACKER_READ_TOKEN",
    show_envvar=True,
    help="The tracker's read token, for --check (Authorization: Bearer).  [default: none]",
)
@click.option(
    "--check",
    is_flag=True,
    help="Then read every instance and document back, print each difference from the "
    "expected end, and exit 1 if there is any.",
)
@click.option(
    "--lose",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 0.5),
    help="Share of callbacks lost for good, as when Scrive's tenth attempt fails (never "
    "one whose loss would change how the others fold). --check then expects what asking "
    "Scrive's API can bring back.",
)
@click.option(
    "--scrive-api",
    metavar="HOST:PORT",
    default=None,
    help="After sending, serve a simulated Scrive API there (a loopback address) that "
    "answers the true state of every instance and document, checking the "
    "FLOWTRACKER_SCRIVE_* credentials as Scrive does. With --check, checks again every "
    "5 s until the tracker passes (after `flowtracker reconcile --stuck`).",
)
@click.option(
    "--wait",
    type=click.FloatRange(0),
    default=None,
    help="Serve the simulated Scrive API at most this many seconds.  [default: until it "
    "passes the check, or Ctrl-C]",
)
def simulate_command(
    url: str,
    instances: int,
    duplicates: float,
    reorder: float,
    seed: int | None,
    rate: float | None,
    connections: int,
    time_scale: float,
    token: str | None,
    read_token: str | None,
    check: bool,
    lose: float,
    scrive_api: str | None,
    wait: float | None,
) -> None:
    """Send realistic Scrive callbacks to a running tracker, delivered as Scrive does.

    Flow instances end completed, rejected, cancelled, timed out or failed, or stay in
    progress, with authentication attempts, custom callbacks, one `completed` per
    document, and the document callbacks of their documents (growing object_version).
    Delivery is at least once and out of order; a failed attempt (no answer, or not a
    2xx) is retried on Scrive's schedule, compressed by --time-scale, up to ten attempts.
    A 401, or no callback accepted for 60 s, stops the run.

    Prints what was sent and the states a correct tracker ends with. Exits 0 when every
    callback was delivered (and, with --check, the tracker agrees), 1 otherwise.
    """
    try:
        settings = Settings.from_env(os.environ) if scrive_api is not None else None
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    try:
        target = simulate.Target(url, token=token or None, read_token=read_token or None)
        options = simulate.Options(
            target=target,
            instances=instances,
            duplicates=duplicates,
            reorder=reorder,
            seed=seed,
            rate=rate,
            connections=connections,
            time_scale=time_scale,
            check=check,
            lose=lose,
            scrive_api=None if scrive_api is None else _loopback(scrive_api),
            scrive_settings=settings,
            wait=wait,
        )
        if not simulate.run(options, click.echo):
            sys.exit(1)
    except simulate.SimulationError as error:
        raise click.ClickException(str(error)) from None


def _loopback(text: str) -> tuple[str, int]:
    """HOST:PORT of a loopback address (the simulated API serves nobody else)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        number = int(port)
    except ValueError:
        loopback, number = False, -1
    if not loopback or not 0 <= number <= 65535:
        raise click.BadParameter(
            f"must be a loopback HOST:PORT such as 127.0.0.1:8765, not {text!r}",
            param_hint="--scrive-api",
        )
    return host, number
