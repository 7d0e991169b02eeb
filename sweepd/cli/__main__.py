"""`python -m sweepd.cli ...`: the `sweepd` command."""

from sweepd.cli import main

main()
