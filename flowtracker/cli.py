"""The `flowtracker` command line: wiring of the library, nothing more."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, TypeVar

import click

from flowtracker import __version__
from flowtracker.errors import FlowtrackerError, NotFound
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.ingest.replay import DEFAULT_BATCH, replay
from flowtracker.reads import summaries, views
from flowtracker.reads.text import clip, document_text, instance_text, summary_text
from flowtracker.scrive.cli import simulate_command
from flowtracker.settings import Settings, SettingsError
from flowtracker.store.opening import Access, open_store
from flowtracker.store.protocol import Store

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_path",
        envvar="FLOWTRACKER_DB",
        default="flowtracker.db",
        show_default=True,
        show_envvar=True,
        metavar="FILE|URL",
        help="The SQLite database file, or a PostgreSQL database as "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowtracker")
def main() -> None:
    """Track Scrive Flow instances and documents from their callbacks."""


main.add_command(simulate_command)


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes, all on the same database file.",
)
@click.option(
    "--limit-concurrency",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Connections (or requests in flight) per worker before new requests are answered "
    "503; keep it below the open-files limit (ulimit -n).",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default=None,
    help="SQLite synchronous mode: full survives power loss, normal a process "
    "crash.  [default: full, or FLOWTRACKER_DURABILITY]",
)
@click.option("--no-access-log", is_flag=True, help="Silence uvicorn's access log only.")
@click.option(
    "--callback-log/--no-callback-log",
    default=False,
    show_default=True,
    help="A log line for every callback taken. Refused ones (quarantined, rejected) are "
    "logged either way; /metrics counts every outcome.",
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "json"]),
    default=None,
    help="plain text, or one JSON object per line for machines.  "
    "[default: plain, or FLOWTRACKER_LOG_FORMAT]",
)
@click.option(
    "--writer",
    "writer_mode",
    type=click.Choice(["process", "thread"]),
    default="process",
    show_default=True,
    help="Where callbacks are parsed and stored: one writer process for all workers, "
    "so HTTP and storage run on separate cores; or a thread in each worker.",
)
@click.option(
    "--no-migrate",
    is_flag=True,
    help="Refuse to start on a database that needs migrating (run `flowtracker migrate` "
    "first): for a rolling upgrade of several receivers (docs/deploy.md).",
)
@click.option(
    "--reconcile-every",
    metavar="DURATION",
    default=None,
    help="Run `reconcile --stuck` in the background this often (e.g. 6h; one receiver at "
    "a time). Needs the FLOWTRACKER_SCRIVE_* credentials.  "
    "[default: off, or FLOWTRACKER_RECONCILE_EVERY]",
)
@click.option(
    "--retention",
    metavar="DURATION",
    default=None,
    help="Run `prune --older-than DURATION` in the background, about every hour (e.g. "
    "400d; one receiver at a time).  [default: off, or FLOWTRACKER_RETENTION]",
)
def serve(
    db_path: str,
    host: str,
    port: int,
    workers: int,
    limit_concurrency: int,
    durability: str | None,
    no_access_log: bool,
    callback_log: bool,
    log_format: str | None,
    writer_mode: str,
    no_migrate: bool,
    reconcile_every: str | None,
    retention: str | None,
) -> None:
    """Run the HTTP service (uvicorn) on the database.

    Tokens come from the environment only: FLOWTRACKER_CALLBACK_TOKEN for the callback
    endpoints, FLOWTRACKER_READ_TOKEN for the read API. Without them the service is open.
    """
    from flowtracker.web.serving import ServeOptions, check_listen, claim, run

    try:
        check_listen(host, port)  # before a database is opened, made or migrated
    except OSError as error:
        raise click.ClickException(str(error)) from None
    try:
        every = None if reconcile_every is None else _duration("--reconcile-every", reconcile_every)
        kept = None if retention is None else _duration("--retention", retention)
        settings = Settings.from_env(
            os.environ, db_path=db_path, durability=durability, log_format=log_format,
            reconcile_every_seconds=every, retention_seconds=kept,
        )  # fmt: skip
        if settings.reconcile_every_seconds is not None:
            from flowtracker.scrive.api import Credentials

            Credentials(settings)  # all four set, or say which are not
        # Fail early, before listening; migrates unless --no-migrate.
        open_store(settings.db_path, durability=settings.durability, upgrade=not no_migrate).close()
    except (SettingsError, FlowtrackerError) as error:
        raise click.ClickException(str(error)) from None
    mark, shared = claim(settings.db_path)
    if shared:
        click.echo(
            f"note: another process serves {settings.db_path} already: both take callbacks "
            "correctly, taking turns for its write lock (one serve with --workers N does "
            "the same with less waiting)",
            err=True,
        )
    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        limit_concurrency=limit_concurrency,
        access_log=not no_access_log,
        callback_log=callback_log,
        writer_process=writer_mode == "process",
    )
    try:
        run(settings, options)
    except RuntimeError as error:  # the writer process could not start
        raise click.ClickException(str(error)) from None
    finally:
        if mark is not None:
            mark.close()


@main.command(hidden=True)
@click.option("--socket", "socket_path", required=True, help="The Unix socket to listen on.")
def writer(socket_path: str) -> None:
    """The writer process that `serve` runs; settings come from FLOWTRACKER_* variables."""
    import logging.config

    from flowtracker.ingest.writer import run_writer
    from flowtracker.logs import lighten
    from flowtracker.web.serving import log_config

    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    logging.config.dictConfig(log_config(settings.log_format))
    lighten()
    run_writer(settings, socket_path)


@main.command(name="replay")
@click.argument("file", type=click.File("rb"))
@db_option
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Callbacks committed per transaction.",
)
def replay_command(file: BinaryIO, db_path: str, batch_size: int) -> None:
    """Feed FILE (JSON Lines, one callback body per line; - for stdin) through the pipeline.

    A line with `document_id` or `documentid` is a document callback, any other object a
    Flow callback. Bad lines are reported with their number and quarantined; the run goes on
    and exits 0. The summary counts each callback's outcome when it was taken; a late event
    can change the outcome of others (`status` shows the current ones).
    """
    with _opened(db_path, "create") as (settings, store):
        pipeline = Pipeline(store)
        size = _size(file)
        with click.progressbar(
            length=size,
            label="replaying",
            file=sys.stderr,
            hidden=not size or not sys.stderr.isatty(),
        ) as bar:
            report = replay(
                pipeline,
                file,
                getattr(file, "name", "<stdin>"),
                batch_size=batch_size,
                max_body=settings.max_body,
                on_line=lambda line: bar.update(len(line)),
            )
    for number, error in report.rejected:
        click.echo(f"line {number}: {error.code}: {error.message}", err=True)
    counts = ", ".join(
        f"{report.outcomes[name]} {name}" for name in ("applied", "illegal", "ignored", "duplicate")
    )
    records = "".join(
        f"; {n} {name}" for n, name in ((report.tombstones, "tombstones of pruned subjects"),
                                        (report.reconciled, "answers of Scrive's API")) if n
    )  # fmt: skip
    click.echo(
        f"{report.lines} lines: {counts}, {len(report.rejected)} quarantined; "
        f"{report.out_of_order} out of order{records}"
    )


@main.command()
@click.argument("subject_id", metavar="[ID]", required=False)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON the read API serves.")
def status(subject_id: str | None, db_path: str, as_json: bool) -> None:
    """The summary, or one flow instance or document (by ID) with its history."""
    with _opened(db_path) as (settings, store):
        if subject_id is None:
            data = summaries.status(
                store,
                time.time_ns(),
                stuck_age_ns=settings.stuck_age_seconds * 1_000_000_000,
                version=__version__,
                uptime_seconds=None,
            )
            kind = "summary"
        else:
            kind, data = _lookup(store, subject_id)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(
            {"summary": summary_text, "flow": instance_text, "document": document_text}[kind](data)
        )


@main.command()
@db_option
def rebuild(db_path: str) -> None:
    """Recompute every state and outcome from the stored events (after a rule change)."""
    with _opened(db_path, "write") as (_, store):
        counts = Pipeline(store).rebuild()
    click.echo(
        f"rebuilt {counts['subjects']} subjects from {counts['events']} events: "
        f"{counts['changed_states']} states and {counts['changed_outcomes']} "
        "outcomes changed"
    )


@main.command()
@db_option
def migrate(db_path: str) -> None:
    """Bring the database's schema up to this version of flowtracker, and exit.

    Every command that writes does this by itself; `status` and the other reads never
    do. Run it once before starting upgraded servers on a database that others share.
    """
    try:
        settings = Settings.from_env(os.environ, db_path=db_path)
        store = open_store(settings.db_path, busy_timeout_ms=settings.busy_timeout_ms)
    except (SettingsError, FlowtrackerError) as error:
        raise click.ClickException(str(error)) from None
    applied = store.applied
    store.close()
    if applied:
        noun = "migration" if len(applied) == 1 else "migrations"
        click.echo(f"{store.path}: applied {len(applied)} {noun} ({', '.join(applied)})")
    else:
        click.echo(f"{store.path}: already up to date")


@main.command(name="copy")
@click.argument("source", metavar="SOURCE")
@click.argument("destination", metavar="DESTINATION")
def copy_command(source: str, destination: str) -> None:
    """Copy every event, subject, quarantined request and counter from SOURCE to
    DESTINATION: each a SQLite file or a postgresql:// URL, either way round.

    DESTINATION must be new or empty (it is created and migrated); SOURCE is only read,
    in one snapshot: a copy of a database in use is that database as it was when the
    copy began. Afterwards every read answers the same on both. To move from SQLite to
    PostgreSQL: stop the servers (else what they take meanwhile stays behind),
    `flowtracker copy flowtracker.db postgresql://...`, start them on the URL.
    """
    from flowtracker.store.copying import copy, size

    if source == destination:
        raise click.ClickException("SOURCE and DESTINATION are the same database")
    with _opened(source) as (settings, origin):
        try:
            target = open_store(
                destination, durability=settings.durability,
                busy_timeout_ms=settings.busy_timeout_ms,
            )  # fmt: skip
        except FlowtrackerError as error:
            raise click.ClickException(error.message) from None
        try:
            with click.progressbar(
                length=size(origin), label="copying", file=sys.stderr,
                hidden=not sys.stderr.isatty(),
            ) as bar:  # fmt: skip
                copied = copy(origin, target, bar.update)
        except FlowtrackerError as error:
            raise click.ClickException(error.message) from None
        finally:
            target.close()
    events = copied["flow_events"] + copied["document_snapshots"]
    subjects = copied["instances"] + copied["documents"]
    click.echo(
        f"copied {events} events of {subjects} subjects and {copied['quarantine']} "
        f"quarantined requests from {origin.path} to {target.path}"
    )


@main.command(name="prune")
@db_option
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    required=True,
    help="Remove what has been finished and quiet this long: 400d, 12w, 36h (a unit is required).",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
def prune_command(db_path: str, older_than: str, dry_run: bool) -> None:
    """Remove finished subjects whose last callback was received longer ago than
    --older-than, with their events and raw bodies (SPEC 14): flow instances in a
    terminal state; documents closed, canceled, rejected, timed out or in error.

    Each leaves a tombstone with its final state: a later callback for it is answered
    200, outcome `ignored`, reason `pruned`, and a read of it answers 410. Quarantined
    requests last seen before the cutoff go too, and the change log keeps what
    FLOWTRACKER_CHANGE_RETENTION says (never a change a webhook subscription is owed).
    Safe while the server takes callbacks: each page of 500 subjects is one short
    transaction. `serve --retention` runs it in the background.
    """
    from flowtracker.engine.timestamps import format_ns
    from flowtracker.ingest import retention

    seconds = _duration("--older-than", older_than)
    with _opened(db_path, "write") as (settings, store):
        now = time.time_ns()
        before = format_ns(now - int(seconds * 1e9))
        planned = _feed_call(lambda: retention.count(store, before))
        if dry_run:
            for line in planned.lines(before, dry_run=True):
                click.echo(line)
            return
        changes_before = format_ns(now - int(settings.change_retention_seconds * 1e9))
        with click.progressbar(
            length=sum(planned.subjects.values()), label="pruning", file=sys.stderr,
            hidden=not sys.stderr.isatty(),
        ) as bar:  # fmt: skip
            done = _feed_call(lambda: retention.prune(
                store, before, changes_before=changes_before, progress=bar.update,
            ))  # fmt: skip
    for line in done.lines(before, dry_run=False):
        click.echo(line)


@main.command(name="reconcile")
@click.argument("subject_ids", metavar="[ID]...", nargs=-1)
@db_option
@click.option(
    "--stuck",
    is_flag=True,
    help="Every instance in progress and every document not closed, canceled or rejected "
    "with nothing received for the stuck age (FLOWTRACKER_STUCK_AGE, seconds).",
)
@click.option(
    "--dry-run", is_flag=True, help="Ask Scrive and show what would change; write nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="At most this many requests a second to Scrive's API.  "
    "[default: 5, or FLOWTRACKER_SCRIVE_RATE]",
)
def reconcile_command(
    subject_ids: tuple[str, ...], db_path: str, stuck: bool, dry_run: bool, as_json: bool,
    rate: float | None,
) -> None:  # fmt: skip
    """Ask Scrive's API where flow instances and documents are now, and fold the answers
    in, for callbacks Scrive gave up on (SPEC 13).

    Give IDs, or --stuck. A terminal status of an instance still in progress here is stored
    as a `reconciled` event; a newer document is stored as a snapshot whose
    signed_and_sealed is unknown; a callback always decides over them. A 404 is noted on
    the subject as an anomaly. Prints `before -> after`, `unchanged` or the error for each,
    and a total. Exits 0 when every subject was answered (404 included), 1 otherwise.

    Credentials: FLOWTRACKER_SCRIVE_API_TOKEN, FLOWTRACKER_SCRIVE_API_SECRET,
    FLOWTRACKER_SCRIVE_ACCESS_TOKEN, FLOWTRACKER_SCRIVE_ACCESS_SECRET (Scrive's personal
    access credentials); FLOWTRACKER_SCRIVE_URL (default https://scrive.com) and
    FLOWTRACKER_SCRIVE_FLOW_PATH (default /experimental/flow) say where.
    """
    from flowtracker.scrive import reconcile
    from flowtracker.scrive.api import ScriveAPI

    if bool(subject_ids) == stuck:
        raise click.UsageError("give the IDs to reconcile, or --stuck (not both)")
    with _opened(db_path, "write") as (settings, store):
        try:
            api = ScriveAPI(settings, rate=rate)
        except FlowtrackerError as error:
            raise click.ClickException(error.message) from None
        with api:
            if stuck:
                age_ns = settings.stuck_age_seconds * 1_000_000_000
                subjects = list(reconcile.stuck(store, time.time_ns(), age_ns))
            else:
                subjects = reconcile.named(store, subject_ids)
            with click.progressbar(
                length=len(subjects), label="reconciling", file=sys.stderr,
                hidden=len(subjects) < 20 or not sys.stderr.isatty(),
            ) as bar:  # fmt: skip

                def shown(line: reconcile.Line) -> None:
                    bar.update(1)
                    if not as_json:
                        click.echo(line.text())

                summary = reconcile.reconcile(
                    Pipeline(store), api, subjects, dry_run=dry_run, on_line=shown
                )
    if as_json:
        click.echo(json.dumps(summary.to_dict(dry_run), indent=2, ensure_ascii=False))
    else:
        click.echo(summary.total(dry_run))
    if summary.stopped is not None:
        raise click.ClickException(summary.stopped)
    if not summary.ok:
        sys.exit(1)


@main.command(name="export")
@click.argument("output", metavar="[FILE|-]", default="-", type=click.File("wb", lazy=False))
@db_option
def export_command(output: BinaryIO, db_path: str) -> None:
    """Every stored delivery as JSON Lines that `replay` takes, in the order received
    (to FILE, or - for standard output, the default). Replaying it into an empty database
    gives the same states, histories and outcomes. Only reads the database, in one
    snapshot: beside a running server, the export is the database as it was when it
    began."""
    from flowtracker.reads.export import export

    with _opened(db_path) as (_, store):
        lines = export(store, output)
    output.flush()
    click.echo(f"exported {lines} lines from {store.path}", err=True)


@main.command(name="backup")
@click.argument("file", metavar="FILE")
@db_option
def backup_command(file: str, db_path: str) -> None:
    """A consistent copy of the SQLite database in FILE (a new file), taken while the
    service goes on taking callbacks, and checked (integrity_check). On PostgreSQL use
    pg_dump."""
    from flowtracker.store.opening import is_postgres

    if is_postgres(db_path):
        raise click.ClickException(
            "backup copies SQLite files; for PostgreSQL use pg_dump "
            "(pg_dump --format=custom --file=FILE DATABASE), or `flowtracker copy` "
            "into a SQLite file"
        )
    from flowtracker.store.sqlite.backend import SQLiteStore
    from flowtracker.store.sqlite.backup import backup

    with _opened(db_path) as (_, store):
        assert isinstance(store, SQLiteStore)
        try:
            size = backup(store, file)
        except FlowtrackerError as error:
            raise click.ClickException(error.message) from None
    click.echo(f"backed up {store.path} to {file} ({size:,} bytes, integrity ok)")


@main.group(name="quarantine", invoke_without_command=True)
@db_option
@click.option(
    "--limit",
    default=views.DEFAULT_LIMIT,
    show_default=True,
    type=click.IntRange(1, views.MAX_LIMIT),
    help="How many, newest first.",
)
@click.option("--code", default=None, help="Only those refused with this error code.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON the read API serves.")
@click.pass_context
def quarantine_command(
    context: click.Context, db_path: str, limit: int, code: str | None, as_json: bool
) -> None:
    """The malformed requests kept for an operator, newest first (`quarantine retry` and
    `quarantine delete` act on them)."""
    if context.invoked_subcommand is not None:
        # `quarantine --db X retry ...`: the database named before the action is its own.
        if context.get_parameter_source("db_path") == click.core.ParameterSource.COMMANDLINE:
            context.obj = {"db_path": db_path}
        return
    with _opened(db_path) as (_, store):
        page = _feed_call(lambda: views.quarantine(store, views.Page(limit), code=code))
    if as_json:
        click.echo(json.dumps(page, indent=2, ensure_ascii=False))
        return
    if not page["items"]:
        click.echo("the quarantine is empty" if code is None else f"no quarantined {code}")
    for item in page["items"]:
        error = item["error"]
        click.echo(
            f"{item['id'][:12]}  {item['last_seen']}  x{item['count']}  {item['source']}  "
            f"{error['code']}: {error['message']}"
        )
        click.echo(f"    {clip(item['body'], 160)}")


@quarantine_command.command(name="retry")
@click.argument("ids", metavar="[ID]...", nargs=-1)
@db_option
@click.option("--all", "every", is_flag=True, help="Every kept request (of --code, if given).")
@click.option("--code", default=None, help="With --all: only those of this error code.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.pass_context
def quarantine_retry(
    context: click.Context, ids: tuple[str, ...], db_path: str, every: bool, code: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Run kept requests through the pipeline again, as they came in (after an upgrade
    that accepts them): those now accepted are stored and leave the quarantine; the others
    stay, and the error they get today is shown. IDs are those `quarantine` shows (a
    prefix will do). Exits 0 when every one was accepted, 1 otherwise."""
    from flowtracker.ingest import quarantine

    if bool(ids) == every:
        raise click.UsageError("give the IDs to retry, or --all (not both)")
    with _opened(_group_db(context, db_path), "write") as (settings, store):
        whole = [_kept_id(store, id_) for id_ in ids]
        done = _feed_call(lambda: quarantine.retry(
            Pipeline(store), quarantine.kept(store, whole, code), settings.max_body
        ))  # fmt: skip
    if as_json:
        click.echo(json.dumps(done.to_dict(), indent=2, ensure_ascii=False))
    else:
        for hash_, receipt in done.accepted:
            click.echo(f"{hash_[:12]}  accepted: {receipt.outcome} ({receipt.kind} "
                       f"{receipt.subject_id}, now {receipt.state})")  # fmt: skip
        for hash_, error in done.refused:
            click.echo(f"{hash_[:12]}  still refused: {error.code}: {error.message}")
        click.echo(done.total())
    if done.refused:
        sys.exit(1)


@quarantine_command.command(name="delete")
@click.argument("ids", metavar="[ID]...", nargs=-1)
@db_option
@click.option(
    "--before",
    metavar="DATE",
    default=None,
    help="Every kept request last seen before this date or time (2026-01-31, or RFC 3339).",
)
@click.pass_context
def quarantine_delete(
    context: click.Context, ids: tuple[str, ...], db_path: str, before: str | None
) -> None:
    """Drop kept requests for good: those named (IDs as `quarantine` shows them; a prefix
    will do), or those last seen before --before."""
    from flowtracker.ingest import quarantine

    if bool(ids) == (before is not None):
        raise click.UsageError("give the IDs to delete, or --before DATE (not both)")
    with _opened(_group_db(context, db_path), "write") as (_, store):
        whole = [_kept_id(store, id_) for id_ in ids]
        removed = _feed_call(lambda: quarantine.delete(store, whole, before))
    click.echo(f"deleted {removed} quarantined request{'' if removed == 1 else 's'}")


def _group_db(context: click.Context, db_path: str) -> str:
    """The action's own --db, else the one given to `quarantine` before it, else the
    default (FLOWTRACKER_DB)."""
    own = context.get_parameter_source("db_path") == click.core.ParameterSource.COMMANDLINE
    given = (context.parent.obj or {}).get("db_path") if context.parent else None
    return db_path if own or given is None else str(given)


def _kept_id(store: Store, prefix: str) -> str:
    """The whole id (body hash) of the one kept request that starts with `prefix`."""
    from flowtracker.ingest import quarantine

    try:
        return quarantine.whole_id(store, prefix)
    except FlowtrackerError as error:
        raise click.ClickException(error.message) from None


@main.group()
def webhooks() -> None:
    """Webhook subscriptions: every change of the change feed POSTed to a URL, signed as
    Standard Webhooks says (docs/feed.md). A running server takes a new or changed
    subscription within FLOWTRACKER_WEBHOOK_POLL (5 s)."""


@webhooks.command(name="add")
@click.argument("url")
@db_option
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["flow", "document"]),
    multiple=True,
    help="Only changes of this kind (repeat for both).  [default: both]",
)
@click.option(
    "--from-start",
    is_flag=True,
    help="Deliver every change still kept, not only those committed from now on.",
)
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")  # fmt: skip
def webhooks_add(
    url: str, db_path: str, kinds: tuple[str, ...], from_start: bool, as_json: bool
) -> None:
    """Subscribe URL; prints its id and its secret (shown this once only)."""
    from flowtracker.feed import subscriptions

    chosen = [k for k in ("flow", "document") if k in kinds] if kinds else ["flow", "document"]
    with _opened(db_path, "create") as (_, store):
        made = _feed_call(
            lambda: subscriptions.add(store, url, chosen, from_start=from_start)  # type: ignore[arg-type]
        )
        last, _ = store.change_clock()
    if as_json:
        shown = {**subscriptions.view(made, last), "secret": made.secret}
        click.echo(json.dumps(shown, indent=2))
        return
    start = "every change still kept" if from_start else f"the changes after {made.position}"
    click.echo(f"id: {made.id}\nsecret: {made.secret}")
    click.echo(
        f"delivers {', '.join(made.kinds)} changes to {subscriptions.shown_url(made.url)}, "
        f"from {start}; keep the secret: it is not shown again",
        err=True,
    )


@webhooks.command(name="list")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def webhooks_list(db_path: str, as_json: bool) -> None:
    """The subscriptions: URL, kinds, last delivered seq, lag, last attempt and error."""
    from flowtracker.feed import subscriptions

    with _opened(db_path) as (_, store):
        last, _ = store.change_clock()
        shown = [subscriptions.view(s, last) for s in store.subscriptions()]
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    if not shown:
        click.echo("no webhook subscriptions (`flowtracker webhooks add URL`)")
    for s in shown:
        state = "paused" if s["paused"] else "active"
        click.echo(f"{s['id']}  {state}  {s['url']}  {','.join(s['kinds'])}")
        click.echo(
            f"    delivered up to seq {s['delivered_seq']}, lag {s['lag']}; "
            f"{s['delivered']} delivered, {s['failed']} failed attempts; last attempt "
            f"{s['last_attempt_at'] or 'never'}"
            + (f"; last error: {s['last_error']}" if s["last_error"] else "")
        )


@webhooks.command(name="remove")
@click.argument("subscription_id", metavar="ID")
@db_option
def webhooks_remove(subscription_id: str, db_path: str) -> None:
    """Delete a subscription (its deliveries stop within seconds)."""
    with _opened(db_path, "write") as (_, store):
        if not store.remove_subscription(subscription_id):
            raise click.ClickException(f"no webhook subscription {subscription_id!r}")
    click.echo(f"removed {subscription_id}")


@webhooks.command(name="rotate")
@click.argument("subscription_id", metavar="ID")
@db_option
def webhooks_rotate(subscription_id: str, db_path: str) -> None:
    """A new secret, printed; the old one goes on signing alongside for 24 h."""
    from flowtracker.feed import subscriptions

    with _opened(db_path, "write") as (_, store):
        secret = _feed_call(lambda: subscriptions.rotate(store, subscription_id))
    click.echo(secret)
    click.echo("the old secret signs alongside the new one for 24 h", err=True)


def _pausing(name: str, paused: bool, summary: str) -> None:
    """`webhooks pause` and `webhooks resume`: one command each, the same but for the flag."""

    @webhooks.command(name=name, help=summary)
    @click.argument("subscription_id", metavar="ID")
    @db_option
    def command(subscription_id: str, db_path: str) -> None:
        from flowtracker.feed import subscriptions

        with _opened(db_path, "write") as (_, store):
            _feed_call(lambda: subscriptions.pause(store, subscription_id, paused))
        click.echo(f"{name}d {subscription_id}")


_pausing("pause", True, "Stop delivering (changes are kept for it meanwhile).")
_pausing("resume", False, "Deliver again, from the first change not yet delivered, at once.")


@webhooks.command(name="replay")
@click.argument("subscription_id", metavar="ID")
@db_option
@click.option("--from", "from_seq", type=click.IntRange(1), help="The first seq to deliver again.")
@click.option(
    "--since",
    metavar="DURATION",
    help="Deliver again what was committed in the last DURATION (30m, 2h, 7d).",
)
def webhooks_replay(
    subscription_id: str, db_path: str, from_seq: int | None, since: str | None
) -> None:
    """Deliver again every change still kept from a seq (or a time) on, each with its
    own webhook-id: for a subscriber that lost what it had received."""
    from flowtracker.feed import subscriptions
    from flowtracker.settings import duration

    if (from_seq is None) == (since is None):
        raise click.UsageError("give one of --from SEQ or --since DURATION")
    with _opened(db_path, "write") as (_, store):
        if since is not None:
            try:
                seconds = duration(since)
            except ValueError as error:
                raise click.BadParameter(str(error), param_hint="--since") from None
            from_seq = subscriptions.first_since(store, time.time_ns() - int(seconds * 1e9))
        assert from_seq is not None
        position = _feed_call(lambda: subscriptions.replay(store, subscription_id, from_seq))
    click.echo(f"{subscription_id} delivers again every change after seq {position}")


def _duration(option: str, text: str) -> float:
    from flowtracker.settings import duration

    try:
        seconds = duration(text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None
    if seconds <= 0:
        raise click.BadParameter("must be more than 0", param_hint=option)
    return seconds


def _feed_call(call: Callable[[], T]) -> T:
    try:
        return call()
    except FlowtrackerError as error:
        raise click.ClickException(error.message) from None


@contextmanager
def _opened(db_path: str, access: Access = "read") -> Iterator[tuple[Settings, Store]]:
    """The settings (flags over FLOWTRACKER_* variables) and the database they name,
    opened for `access` (`open_store`: a read creates, migrates and writes nothing)."""
    try:
        settings = Settings.from_env(os.environ, db_path=db_path)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    try:
        store = open_store(
            settings.db_path,
            access=access,
            durability=settings.durability,
            busy_timeout_ms=settings.busy_timeout_ms,
        )
        if store.pending:
            click.echo(
                f"note: {store.path} lacks migrations ({', '.join(store.pending)}); "
                "it reads as it is, and `flowtracker migrate` brings it up to date",
                err=True,
            )
        try:
            yield settings, store
        finally:
            store.close()
    except FlowtrackerError as error:
        raise click.ClickException(error.message) from None


def _lookup(store: Store, subject_id: str) -> tuple[str, dict[str, Any]]:
    try:
        return "flow", views.instance(store, subject_id)
    except NotFound:
        pass
    try:
        return "document", views.document(store, subject_id)
    except NotFound:
        raise NotFound(f"no flow instance or document {subject_id!r}") from None


def _size(file: BinaryIO) -> int:
    try:
        return os.fstat(file.fileno()).st_size
    except (OSError, ValueError):
        return 0
