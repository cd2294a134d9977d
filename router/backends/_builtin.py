"""Registers the built-in backends, through the same function a plugin would call."""

from __future__ import annotations

from router.backends import register_backend


def register() -> None:
    from router.backends import llamacpp, openai_http, scripted

    register_backend("scripted", scripted.ScriptedParams, scripted.create)
    register_backend("openai", openai_http.OpenAIParams, openai_http.create)
    register_backend("llamacpp", llamacpp.LlamaCppParams, llamacpp.create)
