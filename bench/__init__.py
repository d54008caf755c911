"""DurableFuture benchmark suite (W1-W5 of DESIGN.md), side by side with Temporal and DBOS.

Run ``python -m bench --help``; see bench/README.md.
"""
