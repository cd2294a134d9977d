"""Shipped probe suites (one directory each: ``probes.jsonl`` + ``manifest.json``).

The data files are written by ``python -m profiles.suites._generate``; edit the generator's
content modules, never the JSONL by hand.
"""
