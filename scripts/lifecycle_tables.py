"""Print both lifecycles as Markdown tables, generated from the machines the engine runs.

README.md embeds this output between the `lifecycle tables` markers; a test keeps them equal.
Usage: python scripts/lifecycle_tables.py
"""

from __future__ import annotations

from flowtracker.engine.lifecycles import DOCUMENT, FLOW, Lifecycle
from flowtracker.engine.parsing import SCRIVE_INSTANCE_STATUSES


def table(lifecycle: Lifecycle, corner: str, answers: tuple[str, ...] = ()) -> str:
    """Rows: triggers; columns: states; a cell is the next state, `=` to stay, `-` refused.
    `answers`: the statuses of Scrive's API a `reconciled` event is judged as."""
    verdicts = {(state, trigger): dest for state, trigger, dest in lifecycle.table()}
    lines = [
        f"| {corner} | " + " | ".join(f"`{s}`" for s in lifecycle.states) + " |",
        "|---" * (len(lifecycle.states) + 1) + "|",
    ]
    rows = [(f"`{t}`", t) for t in lifecycle.triggers]
    rows += [(f"`reconciled` ({status})¹", status) for status in answers]
    for name, trigger in rows:
        cells = []
        for state in lifecycle.states:
            dest = verdicts[(state, trigger)]
            cells.append("-" if dest is None else "=" if dest == state else f"`{dest}`")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables() -> str:
    return (
        "Flow instance (rows: callback type; columns: current state):\n\n"
        + table(FLOW, "callback \\ state", SCRIVE_INSTANCE_STATUSES[1:])
        + "\n\n\u00b9 An answer of Scrive's API (`reconcile`), dated its `last_event`: judged "
        "as the status it carries while no callback that ends the instance is stored; once "
        "one is, it is `ignored` (superseded by a callback), wherever either stands. A "
        "reconciled document snapshot is judged as any snapshot while its object_version is "
        "newer than that of every snapshot a callback brought, else `ignored` (already "
        "known).\n\nDocument (rows: status of the snapshot; columns: current status; `new` is a "
        "document with no applied snapshot yet):\n\n"
        + table(DOCUMENT, "snapshot \\ state")
        + "\n\n`=` legal, the state stays; `-` illegal (stored with outcome `illegal` and a "
        "reason); a state name: legal, the state becomes that.\n"
    )


if __name__ == "__main__":
    print(tables(), end="")
