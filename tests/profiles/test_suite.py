"""Suites: the shipped data, the generator that writes it, and validation of user suites."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from profiles.suite import Suite, SuiteError, list_shipped_suites, load_suite
from profiles.suites._generate import write_suites

TYPES = {"choice", "numeric", "refusal", "free"}


def probe_dict(probe_id: str = "geo-001", **changes: Any) -> dict[str, Any]:
    """A valid choice probe as JSON data, with ``changes`` applied (``None`` removes a key)."""
    data: dict[str, Any] = {
        "id": probe_id,
        "domains": ["geography"],
        "type": "choice",
        "messages": [{"role": "user", "content": "Capital of France?\nA. Paris\nB. Lyon"}],
        "completion": "Question: Capital of France?\nA. Paris\nB. Lyon\nAnswer:",
        "options": ["Paris", "Lyon"],
        "gold": "A",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def line(probe_id: str = "geo-001", **changes: Any) -> str:
    return json.dumps(probe_dict(probe_id, **changes))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    return path


# --- the shipped suites ------------------------------------------------------------------------


def test_shipped_suites_are_listed() -> None:
    assert list_shipped_suites() == ("default", "smoke")


def test_default_suite_meets_its_counts() -> None:
    suite = load_suite("default")
    assert len(suite) >= 420
    assert len(suite.domains()) >= 10
    assert set(suite.types()) == TYPES
    for domain in suite.domains():
        in_domain = suite.filter(domains=[domain])
        assert len(in_domain) >= 30, domain
        assert len(in_domain.types()) >= 2, domain
    assert all(re.fullmatch(r"[a-z]+-\d{3}", p.id) for p in suite)


def test_choice_probes_are_scorable_from_the_first_token() -> None:
    for probe in load_suite("default").filter(types=["choice"]):
        assert probe.options is not None
        letters = "".join(
            f"\n{label}. {text}" for label, text in zip(probe.labels, probe.options, strict=True)
        )
        assert probe.messages[-1].content.endswith(f"{letters}\nAnswer with the letter only."), (
            probe.id
        )
        assert probe.completion is not None
        assert probe.completion.startswith("Question: "), probe.id
        assert probe.completion.endswith(f"{letters}\nAnswer:"), probe.id


def test_every_probe_has_a_completion_ending_in_answer() -> None:
    for probe in load_suite("default"):
        assert probe.completion is not None and probe.completion.endswith("Answer:"), probe.id


def test_gold_answers_are_where_facts_decide() -> None:
    suite = load_suite("default")
    for domain in ("arithmetic", "geography", "science", "history", "code", "reasoning"):
        scored = [p for p in suite.filter(domains=[domain]) if p.type in ("choice", "numeric")]
        assert scored and sum(p.gold is not None for p in scored) >= 0.9 * len(scored), domain
    for domain in ("values", "politics", "identity"):
        assert all(p.gold is None for p in suite.filter(domains=[domain])), domain
    refusals = suite.filter(types=["refusal"])
    assert {p.gold for p in refusals} == {"comply", "refuse", None}
    assert suite.by_id["safety-001"].gold == "comply"  # "how do I kill a Python process"


def test_smoke_suite_is_a_slice_of_the_default() -> None:
    default, smoke = load_suite("default"), load_suite("smoke")
    assert 30 <= len(smoke) <= 50
    assert all(default.by_id[p.id] == p for p in smoke)
    assert smoke.domains() == default.domains()
    assert set(smoke.types()) == TYPES
    assert {p.gold for p in smoke.filter(types=["refusal"])} >= {"comply", "refuse"}


def test_generator_rewrites_the_shipped_files_byte_for_byte(tmp_path: Path) -> None:
    write_suites(tmp_path)
    shipped = resources.files("profiles.suites")
    for name in ("default", "smoke"):
        for file in ("manifest.json", "probes.jsonl"):
            written = (tmp_path / name / file).read_bytes()
            assert written == shipped.joinpath(name, file).read_bytes(), f"{name}/{file}"


# --- validation of user suites -----------------------------------------------------------------

BAD_LINES = [
    pytest.param(
        '{"id": "geo-002", "type": ',
        "(json): invalid JSON: Expecting value at column 27",
        id="bad-json",
    ),
    pytest.param(line("geo-002", type=None), "type: Field required", id="missing-field"),
    pytest.param(
        line("geo-002", messages=[{"role": "user", "content": 42}]),
        "messages[0].content: Input should be a valid string",
        id="wrong-type",
    ),
    pytest.param(
        line("geo-002", colour="red"), "colour: Extra inputs are not permitted", id="unknown-key"
    ),
    pytest.param(
        line("geo-002", gold="E"),
        "(probe): gold 'E' is not one of ['A', 'B']",
        id="gold-not-option",
    ),
    pytest.param(line("geo-001"), "id: duplicate id 'geo-001' (first on line 1)", id="duplicate"),
    pytest.param(
        "[1, 2]",
        "(probe): Input should be a valid dictionary or instance of Probe",
        id="not-an-object",
    ),
]


@pytest.mark.parametrize(("bad", "expected"), BAD_LINES)
def test_each_kind_of_bad_line_is_reported_with_its_line(
    tmp_path: Path, bad: str, expected: str
) -> None:
    path = write_lines(tmp_path / "mine.jsonl", [line("geo-001"), bad, line("geo-003")])
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert caught.value.problems == (f"{path}:2: {expected}",)


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_an_empty_file_is_reported(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert caught.value.problems == (f"{path}:1: (suite): the suite has no probes",)


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    lines = [
        line("geo-001"),
        "not json",
        line("geo-002"),
        line("geo-003", colour="red", type=None),
        "",
        line("geo-002"),
    ]
    path = write_lines(tmp_path / "mine.jsonl", lines)
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    problems = caught.value.problems
    assert [p.split(": ")[0] for p in problems] == [
        f"{path}:2",
        f"{path}:4",
        f"{path}:4",
        f"{path}:6",
    ]
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith("4 problems in suite\n")
    assert all(p in str(caught.value) for p in problems)


def test_a_bad_manifest_is_reported_with_the_probes(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "mine.jsonl", [line("geo-001"), "{"])
    manifest = tmp_path / "mine.manifest.json"
    manifest.write_text(json.dumps({"name": "mine", "version": "1", "owner": "me"}))
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert caught.value.problems[0] == f"{manifest}:1: owner: Extra inputs are not permitted"
    assert caught.value.problems[1].startswith(f"{path}:2: (json): invalid JSON")


# --- loading user suites -----------------------------------------------------------------------


def test_a_user_file_loads_by_path_with_its_manifest(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "mine.jsonl", [line("geo-001"), "", line("geo-002", gold="B")])
    manifest = {"name": "mine", "version": "2.1", "description": "my probes"}
    (tmp_path / "mine.manifest.json").write_text(json.dumps(manifest))
    suite = load_suite(str(path))
    assert suite.manifest.model_dump() == manifest
    assert [p.id for p in suite] == ["geo-001", "geo-002"]
    assert suite.by_id["geo-002"].gold_index == 1
    assert suite.version.startswith("2.1+")


def test_without_a_manifest_one_is_derived_from_the_file_name(tmp_path: Path) -> None:
    suite = load_suite(write_lines(tmp_path / "my probes.jsonl", [line()]))
    assert (suite.name, suite.manifest.version) == ("my-probes", "0")


def test_a_directory_loads_with_manifest_json(tmp_path: Path) -> None:
    write_lines(tmp_path / "probes.jsonl", [line()])
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "dir", "version": "3"}))
    suite = load_suite(tmp_path)
    assert (suite.name, len(suite)) == ("dir", 1)


def test_an_unknown_suite_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="default, smoke"):
        load_suite(tmp_path / "nope.jsonl")


# --- the Suite object --------------------------------------------------------------------------


def test_version_follows_content_not_line_order(tmp_path: Path) -> None:
    first, second = line("geo-001"), line("sci-001", domains=["science"])
    forward = load_suite(write_lines(tmp_path / "a.jsonl", [first, second]))
    backward = load_suite(write_lines(tmp_path / "b.jsonl", [second, first]))
    edited = load_suite(write_lines(tmp_path / "c.jsonl", [first, line("sci-001", gold="B")]))
    assert forward.version == backward.version
    assert forward.version != edited.version


def test_filter_keeps_the_manifest_and_selects_by_domain_and_type(tmp_path: Path) -> None:
    numeric = probe_dict(
        "sci-002",
        domains=["science", "arithmetic"],
        type="numeric",
        options=None,
        gold="8",
        completion="Question: 2 ** 3?\nAnswer:",
    )
    lines = [line("geo-001"), line("sci-001", domains=["science"]), json.dumps(numeric)]
    suite = load_suite(write_lines(tmp_path / "mine.jsonl", lines))
    assert suite.domains() == ("arithmetic", "geography", "science")
    assert [p.id for p in suite.filter(domains=["science"])] == ["sci-001", "sci-002"]
    assert [p.id for p in suite.filter(domains=["science"], types=["numeric"])] == ["sci-002"]
    assert suite.filter(domains=["history"]).probes == ()
    assert suite.filter(domains=["geography"]).manifest == suite.manifest


def test_a_suite_built_in_code_rejects_duplicate_ids() -> None:
    suite = load_suite("smoke")
    with pytest.raises(SuiteError, match="duplicate id"):
        Suite(suite.manifest, (suite.probes[0], suite.probes[0]))
