"""diffroute's behavioral diff engine: suites, collection, extraction, statistics, diffs, reports.

A library with no web server; it never imports ``router``.
"""
