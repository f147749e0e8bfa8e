"""Chaos runs (issue 7): a harness that injects faults into a real node under client traffic,
records every operation in ``history.jsonl`` and a checker that judges the history."""
