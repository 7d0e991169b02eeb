"""Replay the curve bank through pruners: ``simulate`` (the event-driven simulator) and
``bench`` (``make bench-pruning``: many seeds per pruner, the table, the plot, the default)."""
