"""Suites: versioned sets of probes stored as JSONL, with a small manifest beside them.

A suite on disk is ``probes.jsonl`` (one :class:`~profiles.probe.Probe` per line; blank lines are
ignored) plus an optional ``manifest.json`` (``name``, ``version``, ``description``). Shipped
suites live in the ``profiles.suites`` package, one directory each; users point
:func:`load_suite` at their own file or directory instead.

Loading validates every line and collects *all* problems before failing, so a user fixing a
suite sees each bad line once, as ``file:line: field.path: message`` (the format editors and
CI annotators understand).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from profiles.probe import AnswerType, Probe

SHIPPED_PACKAGE = "profiles.suites"
PROBES_FILE = "probes.jsonl"
MANIFEST_FILE = "manifest.json"
SUITE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class SuiteError(ValueError):
    """A suite could not be loaded; ``problems`` holds one ``file:line: path: message`` each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} in suite"
        super().__init__("\n".join([header, *self.problems]))


class SuiteManifest(BaseModel):
    """What a suite is called and which version of its text it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SUITE_NAME_PATTERN, max_length=80)
    version: str = Field(min_length=1, max_length=40)
    description: str = ""


@dataclass(frozen=True)
class Suite:
    """A manifest and its probes, in file order; probe ids are unique."""

    manifest: SuiteManifest
    probes: tuple[Probe, ...] = field(default=())

    def __post_init__(self) -> None:
        problems = [
            f"{self.manifest.name}: id: duplicate id '{probe_id}'"
            for probe_id in _duplicates(p.id for p in self.probes)
        ]
        if problems:
            raise SuiteError(problems)

    def __len__(self) -> int:
        return len(self.probes)

    def __iter__(self) -> Iterator[Probe]:
        return iter(self.probes)

    @property
    def name(self) -> str:
        """The manifest's name."""
        return self.manifest.name

    @cached_property
    def by_id(self) -> Mapping[str, Probe]:
        """Probes by id."""
        return {p.id: p for p in self.probes}

    @cached_property
    def content_hash(self) -> str:
        """Hash of every probe's id and content; independent of the order of the lines."""
        digest = hashlib.sha256()
        for probe_id, content in sorted((p.id, p.content_hash()) for p in self.probes):
            digest.update(f"{probe_id}\0{content}\n".encode())
        return digest.hexdigest()[:12]

    @property
    def version(self) -> str:
        """``<manifest version>+<content hash>``: changes whenever any probe changes."""
        return f"{self.manifest.version}+{self.content_hash}"

    def domains(self) -> tuple[str, ...]:
        """Every domain tag used by a probe, sorted."""
        return tuple(sorted({d for p in self.probes for d in p.domains}))

    def types(self) -> tuple[AnswerType, ...]:
        """Every answer type used by a probe, sorted."""
        return tuple(sorted({p.type for p in self.probes}))

    def filter(
        self,
        domains: Iterable[str] | None = None,
        types: Iterable[AnswerType] | None = None,
    ) -> Suite:
        """The probes tagged with any of ``domains`` and of any of ``types`` (``None``: all)."""
        wanted_domains = None if domains is None else frozenset(domains)
        wanted_types = None if types is None else frozenset(types)
        kept = tuple(
            p
            for p in self.probes
            if (wanted_domains is None or wanted_domains.intersection(p.domains))
            and (wanted_types is None or p.type in wanted_types)
        )
        return Suite(self.manifest, kept)


def list_shipped_suites() -> tuple[str, ...]:
    """Names of the suites shipped in the package, sorted."""
    root = resources.files(SHIPPED_PACKAGE)
    return tuple(
        sorted(
            entry.name
            for entry in root.iterdir()
            if entry.is_dir()
            and not entry.name.startswith(("_", "."))
            and entry.joinpath(PROBES_FILE).is_file()
        )
    )


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a shipped suite by name, or a user suite from a ``.jsonl`` file or a directory.

    A ``.jsonl`` file's manifest is ``<stem>.manifest.json`` or ``manifest.json`` beside it; a
    directory holds ``probes.jsonl`` and optionally ``manifest.json``. Without a manifest, one
    is derived from the file name. A shipped name wins over a same-named path in the working
    directory (pass ``./default`` to mean the path). Raises :class:`SuiteError` listing every
    problem found, or ``FileNotFoundError`` when there is no such suite.
    """
    if isinstance(name_or_path, str) and name_or_path in list_shipped_suites():
        directory = resources.files(SHIPPED_PACKAGE).joinpath(name_or_path)
        return _load(
            directory.joinpath(PROBES_FILE),
            directory.joinpath(MANIFEST_FILE),
            default_name=name_or_path,
        )
    path = Path(name_or_path)
    if path.is_dir():
        return _load(path / PROBES_FILE, path / MANIFEST_FILE, default_name=path.name)
    if path.is_file():
        manifest = _manifest_beside(path)
        return _load(path, manifest, default_name=path.stem)
    shipped = ", ".join(list_shipped_suites())
    raise FileNotFoundError(
        f"no suite '{name_or_path}': not a file, a directory or one of: {shipped}"
    )


def parse_probes(text: str, source: str) -> tuple[tuple[Probe, ...], list[str]]:
    """Parse JSONL ``text`` into probes; returns them with the problems found (never raises)."""
    probes: list[Probe] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    # split on "\n" only: str.splitlines() would also break at U+2028 inside a JSON string
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        probe = _parse_line(line, f"{source}:{number}", problems)
        if probe is None:
            continue
        if probe.id in first_line:
            problems.append(
                f"{source}:{number}: id: duplicate id '{probe.id}' "
                f"(first on line {first_line[probe.id]})"
            )
            continue
        first_line[probe.id] = number
        probes.append(probe)
    if not first_line and not problems:
        problems.append(f"{source}:1: (suite): the suite has no probes")
    return tuple(probes), problems


def _load(
    probes_file: Traversable | Path, manifest_file: Traversable | Path | None, default_name: str
) -> Suite:
    if not probes_file.is_file():
        raise FileNotFoundError(f"no probes file: {probes_file}")
    problems: list[str] = []
    manifest = _read_manifest(manifest_file, default_name, problems)
    text = _read_utf8(probes_file, problems)
    if text is None:
        raise SuiteError(problems)
    probes, probe_problems = parse_probes(text, str(probes_file))
    problems.extend(probe_problems)
    if problems or manifest is None:
        raise SuiteError(problems)
    return Suite(manifest, probes)


def _read_utf8(file: Traversable | Path, problems: list[str]) -> str | None:
    """The file's text; ``None`` with a ``file:line`` problem where it is not UTF-8 (it was a
    bare ``UnicodeDecodeError``, not a problem of the suite's)."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        problems.append(f"{file}:{line}: (encoding): not UTF-8 text (byte {exc.start}): a "
                        "suite is JSON in UTF-8")
        return None


def _parse_line(line: str, where: str, problems: list[str]) -> Probe | None:
    try:
        data: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        problems.append(f"{where}: (json): invalid JSON: {exc.msg} at column {exc.colno}")
        return None
    try:
        return Probe.model_validate(data)
    except ValidationError as exc:
        problems.extend(f"{where}: {message}" for message in _validation_messages(exc))
        return None


def _read_manifest(
    manifest_file: Traversable | Path | None, default_name: str, problems: list[str]
) -> SuiteManifest | None:
    if manifest_file is None or not manifest_file.is_file():
        return _derived_manifest(default_name)
    source = str(manifest_file)
    text = _read_utf8(manifest_file, problems)
    if text is None:
        return None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{source}:{exc.lineno}: (json): invalid JSON: {exc.msg}")
        return None
    try:
        return SuiteManifest.model_validate(data)
    except ValidationError as exc:
        problems.extend(f"{source}:1: {message}" for message in _validation_messages(exc))
        return None


def _derived_manifest(file_stem: str) -> SuiteManifest:
    """A manifest for a suite that has none: named after its file, version ``0``."""
    name = "".join(c if c.isalnum() or c in "_.-" else "-" for c in file_stem).strip("-.")
    return SuiteManifest(name=name or "suite", version="0", description="")


def _manifest_beside(probes_file: Path) -> Path | None:
    for candidate in (
        probes_file.with_name(f"{probes_file.stem}.manifest.json"),
        probes_file.with_name(MANIFEST_FILE),
    ):
        if candidate.is_file():
            return candidate
    return None


def _validation_messages(exc: ValidationError) -> list[str]:
    """``field.path: message`` for each pydantic error; model-level errors get ``(probe)``."""
    errors = exc.errors(include_url=False)
    messages = []
    for error in errors:
        if error["type"] == "too_short" and _has_nested_error(error["loc"], errors):
            # pydantic drops an invalid item, then finds the container too short: noise
            continue
        location = _field_path(error["loc"]) or "(probe)"
        message = error["msg"].removeprefix("Value error, ")
        messages.append(f"{location}: {message}")
    return messages


def _has_nested_error(location: tuple[int | str, ...], errors: Iterable[ErrorDetails]) -> bool:
    depth = len(location)
    return any(len(e["loc"]) > depth and e["loc"][:depth] == location for e in errors)


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _duplicates(ids: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    duplicates: list[str] = []
    for probe_id in ids:
        if probe_id in seen:
            duplicates.append(probe_id)
        seen.add(probe_id)
    return duplicates
