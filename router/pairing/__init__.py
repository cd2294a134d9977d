"""Pairing: which partner a model gets, for which role, and why.

* :mod:`router.pairing.decision` — what a decision is; the ``Decider`` protocol;
* :mod:`router.pairing.policy` — the assist/audit policy: pure functions over tables;
* :mod:`router.pairing.graph` — the per-domain similarity graph;
* :mod:`router.pairing.index` — the faiss probe index (task text → domain weights);
* :mod:`router.pairing.pinned` — pinned partners and exclusions set by an admin;
* :mod:`router.pairing.decider` — the policy over the pool's loaded profiles;
* :mod:`router.pairing.service` — the running service's current decider, asked off the loop.
"""
