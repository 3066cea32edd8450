"""`flowtracker simulate`: the command line of the simulator (options and wiring only)."""

from __future__ import annotations

import sys

import click

from flowtracker.scrive import simulate


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
        )
        if not simulate.run(options, click.echo):
            sys.exit(1)
    except simulate.SimulationError as error:
        raise click.ClickException(str(error)) from None
