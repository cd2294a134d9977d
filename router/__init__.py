"""diffroute's runtime: configuration, backends, pool, pairing policy, HTTP service, live diffs."""

__version__ = "0.1.0"
