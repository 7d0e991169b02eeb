"""The curve bank: every step of a grid of fine-tuning runs of a small pretrained model.

``generate`` makes it (``make curve-bank``), ``bank`` reads it, ``report`` writes what it says
(``make bench-report``). The pruning simulator (``benchmarks.pruning``) replays it.
"""
