"""`python -m flowtracker`: the same as the `flowtracker` command."""

from flowtracker.cli import main

main()
