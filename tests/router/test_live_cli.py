"""``diffroute diffs`` and ``diffroute drift`` on the configured store (both engines)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.cli import main
from router.config import Settings
from router.live.drift import DriftEvent
from router.live.sink import DurableLiveDiffSink
from router.paired.compare import Comparison
from router.store import open_store
from tests.router.live.test_live_store import record


async def fill(settings: Settings) -> str:
    async with open_store(settings) as store:
        sink = DurableLiveDiffSink(store)
        stored = await sink.record(record("Paris.", "Lyon.",
                                          Comparison(0, True, 0.9, 0.35, "-P\n")))
        await sink._drift(DriftEvent("alpha", "beta", "general", "up", 0.01, 0.4, 30, 10.5, 1.0))
    assert stored is not None
    return stored


def config_file(settings: Settings, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CLI arguments that name ``settings``' store (its DSN through the environment)."""
    lines = ["models: [{name: alpha, family: a, backend: {kind: scripted, answers: {x: 1}}}]"]
    if settings.store.dsn is not None:
        monkeypatch.setenv("TEST_STORE_DSN", settings.store.dsn.value() or "")
        lines.append("store: {kind: postgres, dsn: env:TEST_STORE_DSN}")
    path = root / "pool.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ["--config", str(path), "--data-dir", str(settings.data_dir)]


async def test_diffs_and_drift_read_the_store(engine_settings: Settings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    stored = await fill(engine_settings)
    where = config_file(engine_settings, tmp_path, monkeypatch)
    # the CLI runs its own event loop: in a thread, as from a shell
    await asyncio.to_thread(main, ["diffs", *where, "--pair", "alpha,beta", "--since", "1h"])
    out = capsys.readouterr().out
    assert stored in out and "divergence 0.900 > 0.350" in out
    assert "alpha vs beta (audit, concurrent)" in out  # a report would say "reported"
    await asyncio.to_thread(main, ["diffs", *where, "--pair", "beta,alpha"])
    assert stored not in capsys.readouterr().out
    await asyncio.to_thread(main, ["drift", *where])
    assert "DRIFT up   alpha vs beta in general: disagreement 0.400 (expected 0.010)" in (
        capsys.readouterr().out)


async def test_diffs_never_send_a_models_control_characters_to_the_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A live diff is the text of two models: an OSC sequence (the terminal's title, its
    clipboard), a clear screen or a carriage return in it is shown escaped, as the diff
    report does."""
    from tests.stores import plain_settings

    settings = plain_settings(tmp_path)
    hostile = "-Paris.\n+Lyon.\x1b]0;pwned\x07\x1b[2J\rfake line\n"
    async with open_store(settings) as store:
        stored = await DurableLiveDiffSink(store).record(
            record("Paris.", "Lyon.", Comparison(0, True, 0.9, 0.35, hostile)))
    assert stored is not None

    await asyncio.to_thread(main, ["diffs", "--data-dir", str(settings.data_dir)])
    out = capsys.readouterr().out
    assert stored in out and "+Lyon." in out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out, repr(out)
    assert "\\x1b]0;pwned\\x07" in out


@pytest.mark.parametrize("damage", ["newer", "not a store"])
def test_a_store_this_version_cannot_read_is_one_line(tmp_path: Path, damage: str,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    import sqlite3

    data = tmp_path / "data"
    data.mkdir()
    path = data / "live.sqlite3"
    if damage == "newer":
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version=999")
    else:
        path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    for command in (["diffs"], ["drift"]):
        with pytest.raises(SystemExit) as exited:
            main([*command, "--data-dir", str(data)])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith("diffroute: error: ") and str(path) in err
        assert ("newer than this diffroute" if damage == "newer" else "cannot read") in err
    if damage == "newer":  # read, never migrated
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (999,)
            assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    else:
        assert path.read_bytes() == before


async def test_url_answers_that_are_not_a_services_are_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from aiohttp import web

    import router.cli
    from tests.e2e.harness import make_settings, serve, standard_models

    async def html(_request: web.Request) -> web.Response:
        return web.Response(text="<html>not diffroute</html>", content_type="text/html")

    async def silent(_request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def other(_request: web.Request) -> web.Response:  # JSON, but not live diffs
        return web.json_response({"data": [{"name": "not a live diff"}]})

    app = web.Application()
    app.router.add_get("/html/v1/diffs", html)
    app.router.add_get("/silent/v1/diffs", silent)
    app.router.add_get("/other/v1/diffs", other)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    monkeypatch.setattr(router.cli, "FETCH_TIMEOUT_S", 0.5)
    monkeypatch.delenv("DIFFROUTE_API_KEY", raising=False)

    async def fails(url: str) -> tuple[int | str | None, str]:
        with pytest.raises(SystemExit) as exited:
            await asyncio.to_thread(main, ["diffs", "--url", url])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("diffroute: error: "), err
        return exited.value.code, err

    try:
        assert (await fails("127.0.0.1:8080"))[0] == 2  # no scheme: a usage error
        code, err = await fails(base + "/html")
        assert code == 1 and "not a diffroute answer" in err
        code, err = await fails(base + "/silent")
        assert code == 1 and "no answer within 0.5 s" in err
        code, err = await fails(base + "/other")  # was "'created_at' (KeyError)"
        assert code == 1 and "did not answer with diffroute's live diffs" in err, err
        code, err = await fails("http://127.0.0.1:9")  # nothing listens
        assert code == 1 and "127.0.0.1:9" in err
        settings = make_settings(tmp_path, standard_models(), api_keys=["k-1"])
        async with serve(settings) as running:
            code, err = await fails(running.url)
            assert code == 1 and "HTTP 401" in err and "DIFFROUTE_API_KEY" in err
            monkeypatch.setenv("DIFFROUTE_API_KEY", "k-1")
            await asyncio.to_thread(main, ["diffs", "--url", running.url])
            assert capsys.readouterr().err == ""
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("pair", ["alpha,", ",beta", "alpha,beta,gamma"])
def test_a_pair_without_two_names_is_a_usage_error_as_with_url(
        tmp_path: Path, pair: str, capsys: pytest.CaptureFixture[str]) -> None:
    # the service refuses it (400 naming pair); read from the data dir it listed nothing
    with pytest.raises(SystemExit) as exited:
        main(["diffs", "--data-dir", str(tmp_path), "--pair", pair])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--pair takes two models" in err, err


async def test_url_may_be_the_v1_url_the_service_announces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``service.started`` gives ``url: http://…/v1`` (an OpenAI client's base_url); as
    ``--url`` it was ``HTTP 404: no route GET /v1/v1/diffs``."""
    from tests.e2e.harness import make_settings, serve, standard_models

    monkeypatch.delenv("DIFFROUTE_API_KEY", raising=False)
    async with serve(make_settings(tmp_path, standard_models())) as running:
        for url in (running.base_url, running.base_url + "/"):
            await asyncio.to_thread(main, ["diffs", "--url", url])
            await asyncio.to_thread(main, ["drift", "--url", url])
            out = capsys.readouterr()
            assert out.err == "" and "no drift recorded" in out.out, out


@pytest.mark.parametrize(("url", "says"), [
    ("http://", "'http://' names no host"),
    ("http://[::1", "'http://[::1': Invalid IPv6 URL"),
    ("http://127.0.0.1:99999", "'http://127.0.0.1:99999': Port out of range 0-65535"),
])
def test_a_url_that_names_no_service_is_a_usage_error(
        url: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """They were exit 1 and the URL said twice: "http:/v1/diffs: http:///v1/diffs"."""
    for command in ("diffs", "drift"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--url", url])
        err = capsys.readouterr().err
        assert exited.value.code == 2
        assert err == f"diffroute: error: Invalid value for --url: {says}\n"
