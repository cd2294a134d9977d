"""The pool meets the diff engine: profiles of pool models, built and found.

* :mod:`router.profiling.sources` — suites, embedders, stored and shipped profiles, diffs;
* :mod:`router.profiling.build` — collecting observations from the pool (``profile build``).
"""
