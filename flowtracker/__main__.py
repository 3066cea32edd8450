"""`python -m flowtracker`: the same as the `flowtracker` command."""

from .cli import main

main()
