"""CLI usage found wanting by a newcomer's sweep: each case is one line on stderr and the exit
code the README gives (2 for usage and configuration errors), and nothing is done twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from router.testing.simulate import simulated_suite
from tests.router.test_cli_diff import Run
from tests.router.test_cli_diff import cli as run_cli

MODELS = [
    {"name": "sa", "family": "p1", "backend": {"kind": "scripted", "prior": "p1", "seed": 1}},
    {"name": "sb", "family": "p2", "backend": {"kind": "scripted", "prior": "p2", "seed": 2}},
]


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    suite = simulated_suite(["history"], 4)
    (tmp_path / "sim.jsonl").write_text(
        "".join(p.model_dump_json(exclude_none=True) + "\n" for p in suite.probes),
        encoding="utf-8")
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "data", "models": MODELS}), encoding="utf-8")
    return config


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    return run_cli(list(argv), capsys)


def test_a_file_that_is_not_a_suite_is_a_configuration_error_in_few_lines(
        pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``profile build``/``show`` loaded suites themselves: exit 1 and the catch-all line."""
    junk = tmp_path / "junk.jsonl"
    junk.write_text("".join(f"not json {i}\n" for i in range(25)), encoding="utf-8")
    for command in (["profile", "build"], ["profile", "show"]):
        run = cli(capsys, *command, "--config", str(pool), "--suite", str(junk))
        lines = run.err.splitlines()
        assert run.code == 2 and 2 <= len(lines) <= 6, run.err
        assert all(line.startswith("diffroute: error: ") for line in lines)
        assert "and 20 more problem(s)" in lines[-1] and "SuiteError" not in run.err
        run = cli(capsys, *command, "--config", str(pool), "--suite", "no-such-suite")
        assert run.code == 2 and run.err.count("\n") == 1 and "no suite 'no-such-suite'" in run.err


def test_a_model_named_twice_is_profiled_once(pool: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(capsys, "profile", "build", "--config", str(pool), "--suite",
              str(pool.parent / "sim.jsonl"), "--samples", "2", "--models", "sa,sa")
    assert run.code == 0, run.err
    # 4 probes × 2 samples, and a confirm collection as many: once, not twice
    assert "collected 16 samples in 16 calls" in run.err, run.err
    assert sum(line.startswith("sa ") for line in run.out.splitlines()) == 1, run.out


def test_a_panel_of_assistants_is_a_usage_error(pool: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``--panel`` silently turned ``--role assist`` into audit."""
    run = cli(capsys, "pairs", "--config", str(pool), "--panel", "2", "--role", "assist")
    assert run.code == 2 and run.err.count("\n") == 1 and "--role audit" in run.err


def test_a_since_that_is_no_time_is_a_usage_error_naming_every_form(
        pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("-1h", "bogus", "1x"):
        run = cli(capsys, "diffs", "--config", str(pool), "--since", value)
        assert run.code == 2 and run.err.count("\n") == 1, (value, run.err)
        assert "10m" in run.err and "ISO 8601" in run.err and f"'{value}'" in run.err


def test_no_audit_price_is_shown_without_a_profiled_pair(
        pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing profiled: there is no price to show (it said "a false alarm costs 0.00")."""
    run = cli(capsys, "pairs", "--config", str(pool), "--role", "audit")
    assert "false alarm" not in run.out, run.out
    run = cli(capsys, "pairs", "--config", str(pool), "--role", "audit", "--format", "json")
    assert "audit_price" not in run.out


def test_a_build_whose_requests_fail_ends_with_an_error_line(
        pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It exited 1 with warnings only; the last line now says what failed and what to do."""
    data = yaml.safe_load(pool.read_text(encoding="utf-8"))
    data["models"][0]["backend"].update(failure_rate=1.0)
    data["models"][0]["circuit"] = None
    pool.write_text(yaml.safe_dump(data), encoding="utf-8")
    run = cli(capsys, "profile", "build", "--config", str(pool), "--suite",
              str(pool.parent / "sim.jsonl"), "--samples", "2", "--models", "sa")
    last = run.err.strip().splitlines()[-1]
    assert run.code == 1 and last.startswith("diffroute: error: 8 probe(s) could not be "
                                              "collected (sa;"), run.err
    assert "re-run retries them" in last


def test_bare_diffroute_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    """It printed the help as one long error (exit 2)."""
    run = cli(capsys)
    assert run.code == 0 and run.err == "" and run.out.startswith("Usage: diffroute")
    assert "profile" in run.out and "serve" in run.out


@pytest.mark.parametrize(("group", "commands"), [("profile", ("build", "show")),
                                                 ("store", ("check", "migrate"))])
def test_a_bare_command_group_prints_its_help_as_bare_diffroute_does(
        group: str, commands: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """It was ``diffroute: error: Usage: …`` and the help, on stderr, exit 2."""
    run = cli(capsys, group)
    assert run.code == 0 and run.err == "", run.err
    assert run.out.startswith(f"Usage: diffroute {group}")
    assert all(f"  {c} " in run.out for c in commands) and "``" not in run.out


def test_pairs_on_a_data_dir_that_is_a_file_is_one_line_exit_2(
        pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was a raw ``[Errno 20] Not a directory`` and exit 1."""
    data = pool.parent / "data"
    data.write_text("a file")
    run = cli(capsys, "pairs", "--config", str(pool))
    assert run.code == 2 and run.err.count("\n") == 1 and "Errno" not in run.err, run.err
    assert "must be a directory" in run.err


def test_an_empty_answer_distribution_in_a_rule_is_refused(
        pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``answers: {}`` was refused at the top of a scripted model but ignored in a rule."""
    data = yaml.safe_load(pool.read_text(encoding="utf-8"))
    data["models"][0]["backend"]["rules"] = [{"contains": "x", "answers": {}}]
    pool.write_text(yaml.safe_dump(data), encoding="utf-8")
    run = cli(capsys, "models", "--config", str(pool))
    assert run.code == 2 and "needs at least one answer" in run.err and "rules" in run.err


def test_an_interrupt_while_the_command_line_loads_is_one_line_not_a_traceback() -> None:
    """The console script imports for about a third of a second before `main` runs: a
    Ctrl-C then printed a page of Python traceback. (A signal in the interpreter's own start,
    before the console script's first line has imported `router.__main__`, is Python's.)"""
    script = Path(sys.executable).with_name("diffroute")
    handled = 0
    for after_s in (0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7):
        process = subprocess.Popen([str(script), "profile", "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(after_s)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        if process.returncode == 0:  # done before the signal: nothing to see
            assert "Usage" in out
        elif "router/__main__.py" in err or process.returncode == 130:  # once run() began
            assert (process.returncode, err) == (130, "diffroute: error: interrupted\n")
            handled += 1
    assert handled, "no interrupt landed while the command line loaded"


@pytest.mark.parametrize("damage", ["not utf-8", "a directory"])
def test_a_pairings_file_that_cannot_be_read_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    pairings = tmp_path / "data" / "pairings.json"
    pairings.parent.mkdir()
    if damage == "a directory":
        pairings.mkdir()
    else:
        pairings.write_bytes(b"\xff\xfe{")
    run = cli(capsys, "pairs", "--data-dir", str(tmp_path / "data"), "--role", "audit",
              "--primary", "smollm2")
    assert run.code == 2 and len(run.err.splitlines()) == 1, run.err
    assert "pairings" in run.err and "Traceback" not in run.err


def test_an_error_while_a_model_load_silences_stderr_is_still_said(tmp_path: Path) -> None:
    """llama-cpp-python points descriptor 2 and `sys.stderr` at /dev/null while a model loads
    (from the thread that loads it, while `serve` starts): a start-up failure in that window
    exited without its line."""
    script = tmp_path / "silenced.py"
    script.write_text(
        "from llama_cpp._utils import suppress_stdout_stderr\n"
        "from router import cli\n"
        "real = cli.resolve_settings\n"
        "def silenced(*args, **kwargs):\n"
        "    suppress_stdout_stderr(disable=False).__enter__()  # a load still under way\n"
        "    return real(*args, **kwargs)\n"
        "cli.resolve_settings = silenced\n"
        "cli.main(['pairs', '--config', 'no-such-pool.yaml'])\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("diffroute: error: ") and "no-such-pool.yaml" in done.stderr


def test_one_sample_per_probe_is_built_with_a_warning_that_diff_needs_two(
        pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(capsys, "profile", "build", "--config", str(pool), "--suite",
              str(pool.parent / "sim.jsonl"), "--samples", "1")
    assert run.code == 0, run.err
    assert "diffroute: warning: --samples 1 gives no noise floor" in run.err
    quiet = cli(capsys, "profile", "build", "--config", str(pool), "--suite",
                str(pool.parent / "sim.jsonl"), "--samples", "2")
    assert quiet.code == 0 and "warning" not in quiet.err


def test_store_check_reads_every_page_of_a_sqlite_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file damaged behind a sound header opened, and `store check` said "up to date"."""
    from router.store import ComparisonRow
    from router.store.sqlite import SqliteStore

    data = tmp_path / "data"
    store = SqliteStore(data).open()
    for i in range(3000):
        store.add_comparison(ComparisonRow(1e9 + i, "alpha", "beta", "audit", "math", False))
    store.close_now()
    ok = cli(capsys, "store", "check", "--data-dir", str(data))
    assert ok.code == 0 and "up to date" in ok.out, ok.err
    path = data / "live.sqlite3"
    raw = bytearray(path.read_bytes())
    raw[8192:] = b"\xa5" * (len(raw) - 8192)
    path.write_bytes(bytes(raw))
    damaged = cli(capsys, "store", "check", "--data-dir", str(data))
    assert damaged.code == 2 and len(damaged.err.splitlines()) == 1, damaged.err
    assert damaged.err.startswith(f"diffroute: error: the live-diff store {path} is damaged: ")


def test_an_empty_host_or_unknown_home_is_a_usage_error(
        pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``serve --host ""`` listened on every interface (0.0.0.0 and ::); ``--data-dir
    ~nosuchuser/d`` was a RuntimeError, exit 1."""
    try:  # in a process of its own: without the check it serves until killed
        served = subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(pool),
                                 "--port", "0", "--host", ""], capture_output=True, text=True,
                                timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("serve --host '' started serving")
    assert served.returncode == 2 and "--host" in served.stderr, served.stderr
    assert served.stderr.count("\n") == 1, served.stderr
    run = cli(capsys, "models", "--config", str(pool), "--data-dir", "~nosuchuser-xyz/d")
    assert run.code == 2 and run.err.count("\n") == 1 and "--data-dir" in run.err, run.err


@pytest.mark.parametrize("command", [["ask", "sa", "hi"], ["profile", "build"],
                                     ["profile", "show"], ["diff", "sa", "sb"]])
def test_a_temperature_that_is_not_a_number_is_a_usage_error(
        pool: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """click's FloatRange let `nan` through: `profile build` stored observations under it and
    `diff` then failed with "probabilities must be finite and non-negative" (exit 1)."""
    run = cli(capsys, *command, "--config", str(pool), "--temperature", "nan")
    assert run.code == 2 and run.err.count("\n") == 1, run.err
    assert "--temperature" in run.err and "'nan' is not a number" in run.err


def test_a_bad_suite_line_is_named_once_as_file_line_field(
        pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's ``file:line: field: message``; the line read ``file: file:line: …``."""
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"id": "m1", "domains": ["history"], "type": "choise", '
                    '"messages": [{"role": "user", "content": "Who?"}]}\n', encoding="utf-8")
    run = cli(capsys, "profile", "build", "--config", str(pool), "--suite", str(mine))
    assert run.code == 2, run.err
    lines = run.err.splitlines()
    assert lines and all(line.startswith(f"diffroute: error: {mine}:1: ") for line in lines)
    assert all(line.count(str(mine)) == 1 for line in lines), run.err


def test_a_suite_file_that_is_not_utf8_is_a_configuration_error_naming_it(
        pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was the catch-all line, exit 1: "'utf-8' codec can't decode byte 0xff …
    (UnicodeDecodeError; …)", naming no file, as a pool file's bytes are named."""
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"id": "a"}\n\x00\x01\xff\xfe garbage\n')
    for command in (["profile", "build"], ["profile", "show"], ["diff", "sa", "sb"]):
        run = cli(capsys, *command, "--config", str(pool), "--suite", str(binary))
        assert run.code == 2, run.err
        assert run.err == (f"diffroute: error: {binary}:2: (encoding): not UTF-8 text (byte 14): "
                           "a suite is JSON in UTF-8\n")


def test_profile_show_of_a_data_dir_without_observations_says_so_and_creates_nothing(
        pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It printed a coverage of 0.000 for every model, exit 0, and created the (mistyped) data
    dir with an empty store in it; ``diffs`` and ``drift`` say "no live-diff store at …"."""
    typo = tmp_path / "no-such-data-dir"
    run = cli(capsys, "profile", "show", "--config", str(pool), "--data-dir", str(typo),
              "--suite", str(pool.parent / "sim.jsonl"))
    assert run.code == 2 and run.out == ""
    assert run.err.startswith(f"diffroute: error: no observation store at {typo}/")
    assert run.err.count("\n") == 1
    assert not typo.exists()


def test_an_export_dir_that_cannot_be_made_is_refused_before_the_collection(
        pool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It failed once every model had been asked (an hour on the embedded pool), exit 1 with a
    bare "[Errno 20] Not a directory: …" under the progress bars."""
    run = cli(capsys, "profile", "build", "--config", str(pool), "--suite",
              str(pool.parent / "sim.jsonl"), "--samples", "2", "--export",
              str(pool / "profiles"))  # under a file
    assert run.code == 2, run.err
    assert run.err == (f"diffroute: error: Invalid value for --export: '{pool / 'profiles'}': "
                       "Not a directory\n")
    assert not (pool.parent / "data").exists()  # nothing was collected


def test_a_model_whose_probes_failed_does_not_replace_its_exported_profile(
        pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A build whose model was down exported its empty profile over the whole one (with
    ``--export router/data/profiles``, as the README rebuilds them: the shipped profile)."""
    suite, exported = str(pool.parent / "sim.jsonl"), tmp_path / "exported"
    run = cli(capsys, "profile", "build", "--config", str(pool), "--suite", suite,
              "--samples", "2", "--models", "sa", "--export", str(exported))
    assert run.code == 0, run.err
    whole = (exported / "sa.json.gz").read_bytes()
    down = [{**MODELS[0], "backend": {**MODELS[0]["backend"], "failure_rate": 1.0}}]
    config = tmp_path / "down.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "down", "models": down}), encoding="utf-8")
    run = cli(capsys, "profile", "build", "--config", str(config), "--suite", suite,
              "--samples", "2", "--export", str(exported))
    assert run.code == 1
    assert "diffroute: warning: sa: not exported (probes are missing;" in run.err
    assert (exported / "sa.json.gz").read_bytes() == whole
