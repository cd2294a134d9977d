"""A profile: one model's observations on a suite, extracted, in a compact serialisable form.

Profiles are built from the observation store (``from_store``) or loaded from a compact JSON
file (``load``/``save``), which is how the embedded pool ships its profiles. A file keeps each
sample's text beside the value extracted from it, and which extractor did
(:data:`~profiles.extract.EXTRACTOR_VERSION`): :meth:`Profile.current` extracts an older file's
values anew, so a saved profile and a fresh build read the same text the same way.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from profiles.collect import Decoding
from profiles.extract import EXTRACTOR_VERSION, extract
from profiles.files import write_atomically
from profiles.probe import Probe
from profiles.protocol import ModelClient, Sample
from profiles.store import Observations, model_key, observation_key
from profiles.suite import Suite

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """A model's k samples of one probe, extracted."""

    probe_id: str
    probe_hash: str
    texts: tuple[str, ...]
    values: tuple[str | None, ...]
    """Extracted answer per sample; ``None`` where extraction failed."""
    option_probs: tuple[float, ...] | None = None
    """``choice`` only: first-token probability of each option, when the backend gave them."""

    @property
    def parsed(self) -> int:
        return sum(v is not None for v in self.values)


@dataclass
class Profile:
    """A model's behavioural fingerprint on one suite."""

    model: str
    model_key: str
    suite: str
    suite_version: str
    decoding: Decoding
    records: dict[str, ProbeRecord] = field(default_factory=dict)
    confirm_records: dict[str, ProbeRecord] = field(default_factory=dict)
    """A second, later collection with another seed (:meth:`Decoding.confirm`), or empty: the
    diff confirms what the first collection flags on it."""
    extractor: int = EXTRACTOR_VERSION
    """The extractor version the values were extracted with (1 for files without one)."""

    @property
    def version(self) -> str:
        """Identifies the data a diff was computed from."""
        return f"{self.model_key}:{self.suite_version}:{self.decoding.key()}"

    def coverage(self, suite: Suite) -> float:
        return len(self.records) / max(1, len(suite.probes))

    def summary(self, suite: Suite) -> dict[str, Any]:
        """Coverage, accuracy on gold probes, refusal rate, answer entropy, parse failures."""
        correct = graded = refusals = refusal_probes = failures = samples = 0
        entropies: list[float] = []
        for probe in suite.probes:
            rec = self.records.get(probe.id)
            if rec is None:
                continue
            samples += len(rec.values)
            failures += len(rec.values) - rec.parsed
            parsed = [v for v in rec.values if v is not None]
            if probe.gold is not None:  # an unparsed sample is graded, and not right
                graded += len(rec.values)
                correct += sum(_matches(probe, v) for v in parsed)
            if probe.type == "refusal":
                refusal_probes += len(parsed)
                refusals += sum(v == "refuse" for v in parsed)
            if parsed and probe.type != "free":
                entropies.append(_entropy(Counter(parsed).values()))
        return {
            "model": self.model,
            "probes": len(self.records),
            "coverage": round(self.coverage(suite), 4),
            "accuracy": round(correct / graded, 4) if graded else None,
            "graded_samples": graded,
            "refusal_rate": round(refusals / refusal_probes, 4) if refusal_probes else None,
            "answer_entropy_bits": round(sum(entropies) / len(entropies), 4) if entropies else None,
            "parse_failures": failures,
            "parse_failure_rate": round(failures / samples, 4) if samples else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "model_key": self.model_key,
            "suite": self.suite,
            "suite_version": self.suite_version,
            "decoding": {"samples": self.decoding.samples,
                         "temperature": self.decoding.temperature, "seed": self.decoding.seed,
                         "round": self.decoding.round},
            "records": _records_json(self.records),
            "confirm_records": _records_json(self.confirm_records),
            "extractor": self.extractor,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported profile format {data.get('format')!r}")
        return cls(data["model"], data["model_key"], data["suite"], data["suite_version"],
                   Decoding(**data["decoding"]), _records_from_json(data["records"]),
                   _records_from_json(data.get("confirm_records", [])),
                   int(data.get("extractor", 1)))

    def current(self, suite: Suite) -> Profile:
        """This profile with its values as the current extractor reads its texts: itself when
        it was extracted by it, else extracted anew (the option probabilities come from the
        first token's logprobs, not the text, and are kept). Records of probes ``suite`` does
        not hold (or holds changed) are left out: they could not be extracted."""
        if self.extractor == EXTRACTOR_VERSION:
            return self
        probes = {p.id: p for p in suite.probes}

        def anew(records: Mapping[str, ProbeRecord]) -> dict[str, ProbeRecord]:
            out = {}
            for pid, record in records.items():
                probe = probes.get(pid)
                if probe is None or probe.content_hash() != record.probe_hash:
                    continue
                found = (extract(probe, Sample(text)) for text in record.texts)
                out[pid] = replace(record, values=tuple(e.value if e.ok else None for e in found))
            return out

        return replace(self, records=anew(self.records),
                       confirm_records=anew(self.confirm_records), extractor=EXTRACTOR_VERSION)

    def save(self, path: Path) -> None:
        """Write compact gzipped JSON (deterministic bytes for the same profile)."""
        blob = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))
        packed = io.BytesIO()
        with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename=path.name) as fh:
            fh.write(blob.encode())
        # an interrupted export never leaves half a profile in place of the previous one
        write_atomically(path, packed.getvalue())

    @classmethod
    def load(cls, path: Path) -> Profile:
        """A saved profile; a damaged file (truncated, not gzip, not a profile) is a
        ``ValueError`` naming it — never an ``EOFError``, which CLIs read as end of input."""
        try:
            with gzip.open(path, "rb") as fh:
                return cls.from_json(json.loads(fh.read()))
        except (EOFError, gzip.BadGzipFile, UnicodeDecodeError, json.JSONDecodeError,
                KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the profile {path} is damaged ({type(exc).__name__}: {exc}); "
                             "rebuild or re-export it") from None


def _records_json(records: Mapping[str, ProbeRecord]) -> list[list[Any]]:
    return [[r.probe_id, r.probe_hash, list(r.texts), list(r.values),
             [round(p, 4) for p in r.option_probs] if r.option_probs else None]
            for r in records.values()]


def _records_from_json(rows: Iterable[list[Any]]) -> dict[str, ProbeRecord]:
    return {pid: ProbeRecord(pid, phash, tuple(texts), tuple(values),
                             tuple(probs) if probs else None)
            for pid, phash, texts, values, probs in rows}


def _matches(probe: Probe, value: str) -> bool:
    if probe.type == "numeric" and probe.gold is not None:
        try:
            return math.isclose(float(value), float(probe.gold), rel_tol=1e-6, abs_tol=1e-9)
        except ValueError:
            return False
    return value == probe.gold


def _entropy(counts: Iterable[int]) -> float:
    values = list(counts)
    total = sum(values)
    return -sum(c / total * math.log2(c / total) for c in values if c)


def from_store(model: ModelClient, suite: Suite, store: Observations,
               decoding: Decoding) -> Profile:
    """Build a profile from stored observations (probes without samples are left out), with
    its confirm collection when the store holds one."""
    identity = model.identity()
    key = observation_key(model.name, identity)
    by_hash = {p.content_hash(): p for p in suite.probes}
    return Profile(model.name, model_key(identity), suite.manifest.name, suite.version,
                   decoding, _stored_records(store, key, decoding, by_hash),
                   _stored_records(store, key, decoding.confirm(), by_hash))


def _stored_records(store: Observations, key: str, decoding: Decoding,
                    by_hash: Mapping[str, Probe]) -> dict[str, ProbeRecord]:
    grouped: dict[str, list[Any]] = {}
    for stored in store.samples(key, decoding.key(), by_hash):
        if stored.index < decoding.samples:
            grouped.setdefault(stored.probe_hash, []).append(stored)
    records = {}
    for phash, stored_samples in grouped.items():
        probe = by_hash[phash]
        extractions = [extract(probe, s.sample) for s in stored_samples]
        probs = next((e.option_probs for e in extractions if e.option_probs), None)
        records[probe.id] = ProbeRecord(
            probe.id, phash,
            tuple(s.sample.text for s in stored_samples),
            tuple(e.value if e.ok else None for e in extractions),
            tuple(probs) if probs else None,
        )
    return records
