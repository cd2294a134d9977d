"""The storage interface, one set of tests run on both engines (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from router.cli import cli
from router.config import Settings
from router.errors import StartupError, StorageError
from router.store import (
    ComparisonRow,
    DiffQuery,
    DriftRow,
    Store,
    open_observations,
    open_store,
    schema_state,
)
from router.store.migrations import POSTGRES, SQLITE
from router.store.sqlite import SqliteStore
from tests.stores import on_postgres, plain_settings


def latest(settings: Settings) -> int:
    return len(POSTGRES if settings.store.kind == "postgres" else SQLITE)


async def test_counts_buckets_and_the_newest_comparisons(store: Store) -> None:
    for i in range(10):
        store.add_comparison(ComparisonRow(1000.0 + i, "alpha", "beta", "audit", "math",
                                           i % 3 == 0))
    store.add_comparison(ComparisonRow(1005.0, "alpha", "gamma", "assist", "law", False))
    await store.flush()
    assert await store.counts(1000.0) == [("alpha", "beta", "math", 10, 4),
                                          ("alpha", "gamma", "law", 1, 0)]
    assert await store.counts(1008.0) == [("alpha", "beta", "math", 2, 1)]
    assert await store.bucketed_counts(1000.0, 5.0) == [
        ("alpha", "beta", "math", 0, 5, 2), ("alpha", "beta", "math", 1, 5, 2),
        ("alpha", "gamma", "law", 1, 1, 0)]
    last, _ = await store.last_ids()
    rows = await store.comparisons_after(last - 3, 0.0, 10)
    assert [row.at for _, row in rows] == [1008.0, 1009.0, 1005.0]  # in commit order
    assert [rowid for rowid, _ in rows] == [last - 2, last - 1, last]
    assert rows[0][1] == ComparisonRow(1008.0, "alpha", "beta", "audit", "math", False)
    assert len(await store.comparisons_after(0, 1000.0, 100)) == 11
    assert len(await store.comparisons_after(0, 1006.0, 2)) == 2


@pytest.mark.parametrize("engine_settings", ["sqlite"], indirect=True)
async def test_comparisons_of_one_loop_turn_are_written_as_one_statement(
        engine_settings: Settings) -> None:
    async with open_store(engine_settings) as store:
        assert isinstance(store, SqliteStore)
        for i in range(5):
            store.add_comparison(ComparisonRow(1e9 + i, "alpha", "beta", "audit", "general",
                                               i == 3))
        await store.flush()  # handed over before it, so committed with it
        assert store.batches == 1
        rows = await store.comparisons_after(0, 0.0, 100)
        assert [(r.at, r.flagged) for _, r in rows] == [(1e9 + i, i == 3) for i in range(5)]
        store.add_comparison(ComparisonRow(2e9, "alpha", "beta", "audit", "general", False))
        await asyncio.sleep(0)  # the end of the turn hands the row over on its own
        await store.flush()
        assert len(await store.comparisons_after(0, 0.0, 100)) == 6


def test_comparisons_without_an_event_loop_are_written_at_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path).open()
    store.add_comparison(ComparisonRow(1e9, "alpha", "beta", "audit", "general", True))
    store.close_now()  # flushes what is queued
    reopened = SqliteStore(tmp_path).open_reader()
    try:
        assert [r["flagged"] for r in reopened.read("SELECT flagged FROM comparisons")] == [1]
    finally:
        reopened.close_now()


async def test_drift_alarms_round_trip_oldest_first(store: Store) -> None:
    for k in range(3):
        assert await store.add_drift_event(DriftRow(2000.0 + k, "alpha", "beta", "math", "up",
                                                    0.1, 0.4 + k / 10, 120 + k, 11.5), 0.5)
    store.request_reprofile(2000.0, "beta", "drift up with alpha in math")
    await store.flush()
    events = await store.drift_events(limit=2)
    assert [e["at"] for e in events] == [2001.0, 2002.0]
    first = events[0]
    assert (first["primary_model"], first["partner"], first["domain"]) == ("alpha", "beta",
                                                                          "math")
    assert first["direction"] == "up" and first["comparisons"] == 121
    assert first["observed"] == pytest.approx(0.5) and first["expected"] == 0.1
    assert isinstance(first["seq"], int) and first["statistic"] == 11.5


async def test_pairings_are_one_document(store: Store) -> None:
    assert await store.load_pairings() is None
    await store.save_pairings('{"pinned": {"alpha": {"audit": "beta"}}}')
    await store.save_pairings('{"excluded": [["alpha", "gamma"]]}')
    assert await store.load_pairings() == '{"excluded": [["alpha", "gamma"]]}'


async def test_an_acknowledged_diff_survives_reopening(engine_settings: Settings) -> None:
    values = {"id": "ld_1", "created_at": 5.0, "request_id": "r", "primary_model": "alpha",
              "partner": "beta", "role": "audit", "answered_by": "alpha", "mode": "concurrent",
              "domains": '["math"]', "prompt_digest": "sha256:x", "prompt": None,
              "primary_text": "4", "partner_text": "5", "agreement": 0.0, "divergence": 1.0,
              "threshold": 0.5, "method": "typed:numeric", "unified_diff": None,
              "reason": "r", "redacted": 0}
    async with open_store(engine_settings) as store:
        seq = await store.add_diff(values)
        with pytest.raises(StorageError):  # the id is unique
            await store.add_diff(values)
        assert store.failure is not None
    async with open_store(engine_settings) as store:
        [diff] = await store.diffs(DiffQuery(limit=1000))
        assert diff["seq"] == seq and diff["id"] == "ld_1" and diff["domains"] == ["math"]
        assert await store.count_diffs() == 1
    if isinstance(store, SqliteStore):  # a write after closing failed at once: it waited forever
        with pytest.raises(StorageError, match="is closed"):
            await asyncio.wait_for(store.add_diff({**values, "id": "ld_2"}), 5)


async def test_a_nul_in_an_answer_is_stored_and_spoils_no_other_record(
        engine_settings: Settings) -> None:
    """PostgreSQL refuses U+0000 in text and jsonb: a model's answer holding one failed the
    whole group commit, other requests' diffs and counts with it. It is stored as U+FFFD."""
    values = {"id": "ld_nul", "created_at": 5.0, "request_id": "r", "primary_model": "alpha",
              "partner": "beta", "role": "audit", "answered_by": "alpha", "mode": "reported",
              "domains": '["ma\\u0000th"]', "prompt_digest": "sha256:x", "prompt": None,
              "primary_text": "4\x00", "partner_text": "5", "agreement": 0.0,
              "divergence": 1.0, "threshold": 0.5, "method": "jaccard", "unified_diff": None,
              "reason": "r", "redacted": 0}
    async with open_store(engine_settings) as store:
        store.add_comparison(ComparisonRow(5.0, "alpha", "beta", "audit", "ma\x00th", True))
        store.add_comparison(ComparisonRow(5.0, "alpha", "beta", "audit", "math", False))
        other = {**values, "id": "ld_other", "primary_text": "fine",
                 "domains": '["math"]'}
        await asyncio.gather(store.add_diff(values), store.add_diff(other))
        await store.flush()
        diffs = {d["id"]: d for d in await store.diffs(DiffQuery(limit=10))}
        assert set(diffs) == {"ld_nul", "ld_other"} and store.failure is None
        assert diffs["ld_nul"]["primary_text"] in ("4\x00", "4\ufffd")
        assert sum(c for *_, c, _ in await store.counts(0.0)) == 2


async def test_instances_starting_at_once_migrate_once(engine_settings: Settings) -> None:
    before = await schema_state(engine_settings, migrate=False) \
        if engine_settings.store.kind == "postgres" else None
    assert before is None or before.current == 0

    async def start() -> int:
        async with open_store(engine_settings) as store:
            store.add_comparison(ComparisonRow(1.0, "a", "b", "audit", "d", True))
            await store.flush()
            return 1

    assert sum(await asyncio.gather(*(start() for _ in range(4)))) == 4
    state = await schema_state(engine_settings, migrate=False)
    assert state.ok and state.current == latest(engine_settings)
    async with open_store(engine_settings) as store:
        assert await store.counts(0) == [("a", "b", "d", 4, 4)]


def test_store_migrate_and_check_commands(engine_settings: Settings) -> None:
    runner = CliRunner()
    args = ["--data-dir", str(engine_settings.data_dir)]
    env = {}
    if engine_settings.store.kind == "postgres":
        assert engine_settings.store.dsn is not None
        config = engine_settings.data_dir.parent / "pool.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            "models: [{name: alpha, family: a, backend: {kind: scripted, answers: {x: 1}}}]\n"
            "store: {kind: postgres, dsn: env:TEST_STORE_DSN}\n", encoding="utf-8")
        args += ["--config", str(config)]
        env["TEST_STORE_DSN"] = engine_settings.store.dsn.value() or ""
    else:
        engine_settings.data_dir.mkdir(parents=True)
        (engine_settings.data_dir / "live.sqlite3").touch()
    checked = runner.invoke(cli, ["store", "check", *args], env=env)
    assert checked.exit_code == 1 and "run diffroute store migrate" in checked.output
    migrated = runner.invoke(cli, ["store", "migrate", *args], env=env)
    assert migrated.exit_code == 0 and "up to date" in migrated.output, migrated.output
    checked = runner.invoke(cli, ["store", "check", *args], env=env)
    assert checked.exit_code == 0 and f"version {latest(engine_settings)}" in checked.output
    assert "diffroute:diffroute" not in checked.output  # never the password


async def test_an_unreachable_database_stops_the_start(tmp_path: Path) -> None:
    dead = on_postgres(plain_settings(tmp_path), "postgresql://nobody:secret@127.0.0.1:1/none",
                       connect_timeout_s=2)
    with pytest.raises(StartupError, match=r"127\.0\.0\.1:1/none") as caught:
        async with open_store(dead):
            pass
    assert "secret" not in str(caught.value)


async def test_an_alarm_is_stored_once_however_many_instances_raise_it(
        engine_settings: Settings) -> None:
    alarm = DriftRow(3000.0, "alpha", "beta", "math", "up", 0.1, 0.5, 150, 10.2)
    async with open_store(engine_settings) as a, open_store(engine_settings) as b:
        raised = await asyncio.gather(*(s.add_drift_event(alarm, 600.0) for s in (a, b, a, b)))
        assert sorted(raised) == [False, False, False, True]
        later = DriftRow(3700.0, "alpha", "beta", "math", "up", 0.1, 0.5, 300, 10.2)
        down = DriftRow(3001.0, "alpha", "beta", "math", "down", 0.1, 0.0, 160, 10.2)
        assert await b.add_drift_event(later, 600.0) and await a.add_drift_event(down, 600.0)
        assert len(await a.drift_events()) == 3


async def test_watchers_hear_of_committed_changes(engine_settings: Settings) -> None:
    async with open_store(engine_settings) as writer, open_store(engine_settings) as other:
        heard: asyncio.Queue[str] = asyncio.Queue()
        watched = other if engine_settings.store.kind == "postgres" else writer
        watched.watch(heard.put_nowait)
        await asyncio.sleep(0.2)  # the listening connection is up…
        while not heard.empty():  # …and has said "anything may have changed"
            heard.get_nowait()
        writer.add_comparison(ComparisonRow(1.0, "a", "b", "audit", "d", False))
        await writer.flush()
        assert await asyncio.wait_for(heard.get(), 5) == "live"
        await writer.save_pairings("{}")
        assert await asyncio.wait_for(heard.get(), 5) == "pairings"


async def test_a_server_that_never_answers_is_a_timeout_named_as_such(tmp_path: Path) -> None:
    from router.store.postgres import where

    async def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        silent = on_postgres(plain_settings(tmp_path),
                             f"postgresql://u:pw@127.0.0.1:{port}/db", connect_timeout_s=0.5)
        with pytest.raises(StartupError) as caught:
            async with open_store(silent):
                pass
        assert str(caught.value).startswith(f"cannot open the store postgresql://127.0.0.1:"
                                            f"{port}/db: ")
        assert not str(caught.value).endswith(": ")  # a timeout has no message of its own
    finally:
        server.close()
    assert where("mysql://u:pw@db.example:3306/x") == "mysql://db.example:3306/x"


@pytest.mark.parametrize("damage", ["a file where the data dir goes", "a store that is not one"])
async def test_a_sqlite_store_that_cannot_open_says_what_to_do(tmp_path: Path,
                                                               damage: str) -> None:
    settings = plain_settings(tmp_path)
    if damage.startswith("a file"):
        settings.data_dir.parent.mkdir(parents=True, exist_ok=True)
        settings.data_dir.write_text("not a directory")
        hint = "the data dir must be a directory this process can write"
    else:
        settings.data_dir.mkdir(parents=True)
        (settings.data_dir / "live.sqlite3").write_bytes(b"garbage" * 500)
        hint = "it is not a store, or is damaged: move the file aside to start with an empty one"
    with pytest.raises(StartupError) as caught:
        async with open_store(settings):
            pass
    assert str(caught.value).endswith(f"({hint})"), caught.value


def test_a_data_dir_that_cannot_be_written_is_not_told_to_move_files_aside(
        tmp_path: Path) -> None:
    """Under /proc nothing can be created, even by root: the advice was to move aside a file
    that does not exist (on a read-only mount, one that holds good data)."""
    settings = plain_settings(tmp_path).model_copy(
        update={"data_dir": Path("/proc/diffroute-no-such-dir")})
    with pytest.raises(StartupError) as caught, open_observations(settings):
        pass
    message = str(caught.value)
    assert "move the file aside" not in message and "read-only mount? permissions?" in message


@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://u:top/secret@127.0.0.1:5432/db", "the DSN cannot be read"),
    ("postgresql://u:top?secret@127.0.0.1:5432/db", "cannot open the store"),
    ("postgresql://u:pw@127.0.0.1:notaport/db", "the DSN cannot be read"),
    ("postgresql://u:pw@127.0.0.1:99999/db", "the DSN cannot be read"),
    ("postgresql://u:pw@[::1/db", "cannot open the store"),
    ("host=127.0.0.1 port=9 user=x password=s3cret dbname=d", "a key/value DSN (host "
                                                               "127.0.0.1, database d)"),
])
def test_a_dsn_that_cannot_be_read_is_one_line_exit_2_without_its_password(
        tmp_path: Path, dsn: str, shown: str) -> None:
    """These were exit 1 with asyncpg's parser's words, which quoted pieces of the password
    ('top', 'secret'), and a key/value DSN was printed whole."""
    config = tmp_path / "pool.yaml"
    config.write_text(
        "models: [{name: alpha, family: a, backend: {kind: scripted, answers: {x: 1}}}]\n"
        "store: {kind: postgres, dsn: env:TEST_BAD_DSN, connect_timeout_s: 1}\n",
        encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "router", "store", "check", "--config",
                           str(config)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TEST_BAD_DSN": dsn}, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert shown in done.stderr
    for secret in ("top", "secret", "s3cret", "pw@"):
        assert secret not in done.stderr, done.stderr
