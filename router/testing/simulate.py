"""Simulated pools with a known ground truth, built from the scripted backend.

A simulated suite's gold answers are :func:`router.backends.scripted.scripted_truth`, so the
accuracy of a scripted model is known by construction; families are models sharing a ``prior``;
a planted difference is a ``shift`` (or another prior) in chosen domains. Used by the tests, the
benchmarks and anyone who wants to see how the policy behaves on a pool of their design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from profiles.collect import Decoding, collect_rounds
from profiles.probe import Probe
from profiles.profile import Profile, from_store
from profiles.store import ObservationStore
from profiles.suite import Suite, SuiteManifest
from router.backends.params import ScriptedParams
from router.backends.scripted import ScriptedBackend, scripted_truth
from router.config import ModelConfig, Settings, settings_from_mapping

OPTIONS = ("A", "B", "C", "D")


def simulated_suite(domains: Sequence[str], per_domain: int, name: str = "sim",
                    with_gold: bool = True) -> Suite:
    """``per_domain`` four-option choice probes in each domain, gold from the simulated world."""
    probes = []
    for domain in domains:
        for i in range(per_domain):
            question = f"[{domain}] question {i}: which option holds?"
            text = question + "\n" + "\n".join(f"{o}. option {o}" for o in OPTIONS) + \
                "\nAnswer with the letter only."
            probes.append(Probe(
                id=f"{domain}-{i:04d}", domains=(domain,), type="choice",
                messages=({"role": "user", "content": text},),
                options=tuple(f"option {o}" for o in OPTIONS),
                gold=scripted_truth(text, OPTIONS) if with_gold else None,
            ))
    return Suite(SuiteManifest(name=name, version="1", description="simulated"), tuple(probes))


def scripted_model(name: str, family: str | None = None, **params: Any) -> ModelConfig:
    """A pool entry for a scripted model (``params`` are :class:`ScriptedParams` fields)."""
    spec = {"name": name, "family": family or params.get("prior", name),
            "backend": {"kind": "scripted", **params}}
    return ModelConfig.model_validate(spec)


def simulated_settings(models: Sequence[Mapping[str, Any]], data_dir: str) -> Settings:
    """Settings for a pool of scripted models given as mappings of ModelConfig fields."""
    return settings_from_mapping({"models": list(models), "data_dir": data_dir})


async def profile_models(configs: Sequence[ModelConfig], suite: Suite, store: ObservationStore,
                         decoding: Decoding | None = None) -> list[Profile]:
    """Collect (the profile and its confirm collection) and build profiles for scripted models
    (no pool needed)."""
    backends = []
    for cfg in configs:
        assert isinstance(cfg.backend, ScriptedParams)
        backends.append(ScriptedBackend(cfg.name, cfg.backend))
    decoding = decoding or Decoding()
    await collect_rounds(backends, suite.probes, store, decoding, concurrency=8)
    return [from_store(b, suite, store, decoding) for b in backends]
