"""Print both lifecycles as Markdown tables, generated from the machines the engine runs.

README.md embeds this output between the `lifecycle tables` markers; a test keeps them equal.
Usage: python scripts/lifecycle_tables.py
"""

from __future__ import annotations

from flowtracker.engine.lifecycles import DOCUMENT, FLOW, Lifecycle


def table(lifecycle: Lifecycle, corner: str) -> str:
    """Rows: triggers; columns: states; a cell is the next state, `=` to stay, `-` refused."""
    verdicts = {(state, trigger): dest for state, trigger, dest in lifecycle.table()}
    lines = [
        f"| {corner} | " + " | ".join(f"`{s}`" for s in lifecycle.states) + " |",
        "|---" * (len(lifecycle.states) + 1) + "|",
    ]
    for trigger in lifecycle.triggers:
        cells = []
        for state in lifecycle.states:
            dest = verdicts[(state, trigger)]
            cells.append("-" if dest is None else "=" if dest == state else f"`{dest}`")
        lines.append(f"| `{trigger}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables() -> str:
    return (
        "Flow instance (rows: callback type; columns: current state):\n\n"
        + table(FLOW, "callback \\ state")
        + "\n\nDocument (rows: status of the snapshot; columns: current status; `new` is a "
        "document with no applied snapshot yet):\n\n"
        + table(DOCUMENT, "snapshot \\ state")
        + "\n\n`=` legal, the state stays; `-` illegal (stored with outcome `illegal` and a "
        "reason); a state name: legal, the state becomes that.\n"
    )


if __name__ == "__main__":
    print(tables(), end="")
