"""Which embedder a process uses: built once per process per spec, from
Django settings when they are configured and from defaults otherwise."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import Embedder
from .batching import MicroBatcher

if TYPE_CHECKING:
    from .http import Budget

_DEFAULT_SPEC = "local"

_cache: dict[str, Embedder] = {}
_batchers: dict[int, MicroBatcher] = {}
_cache_pid: int | None = None
_cache_lock = threading.Lock()


def _setting(name: str, default: Any) -> Any:
    """A Django setting, or `default` where Django is absent or unconfigured,
    so the providers stay usable from plain scripts and tests."""
    try:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:
        return default
    try:
        return getattr(settings, name, default)
    except ImproperlyConfigured:
        return default


def _budget(provider: str, model: str) -> Budget | None:
    requests_per_minute = int(_setting("MIRAGE_EMBED_REQUESTS_PER_MINUTE", 0) or 0)
    if requests_per_minute <= 0:
        return None
    import redis

    from .ratelimit import RequestBudget

    client = redis.Redis.from_url(_setting("MIRAGE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return RequestBudget(
        client,
        f"{_setting('MIRAGE_REDIS_PREFIX', 'mirage:')}embeddings:requests:{provider}:{model}",
        requests_per_minute,
    )


def _build_hash() -> Embedder:
    from .hashing import HashEmbedder

    return HashEmbedder()


def _build_local() -> Embedder:
    from .local import LocalEmbedder

    return LocalEmbedder()


def _build_ollama() -> Embedder:
    from .ollama import OllamaEmbedder

    model = _setting("MIRAGE_OLLAMA_MODEL", "mxbai-embed-large")
    return OllamaEmbedder(
        base_url=_setting("MIRAGE_OLLAMA_URL", "http://127.0.0.1:11434"),
        model=model,
        dimensions=int(_setting("MIRAGE_OLLAMA_DIMENSIONS", 1024)),
        max_input_tokens=int(_setting("MIRAGE_OLLAMA_MAX_INPUT_TOKENS", 510)),
        timeout=float(_setting("MIRAGE_EMBED_TIMEOUT_SECONDS", 60.0)),
        budget=_budget("ollama", model),
    )


def _build_openai() -> Embedder:
    from .openai import OpenAIEmbedder

    model = _setting("MIRAGE_OPENAI_MODEL", "text-embedding-3-small")
    dimensions = _setting("MIRAGE_OPENAI_DIMENSIONS", None)
    return OpenAIEmbedder(
        base_url=_setting("MIRAGE_OPENAI_BASE_URL", "https://api.openai.com/v1"),
        api_key=_setting("MIRAGE_OPENAI_API_KEY", ""),
        model=model,
        dimensions=int(dimensions) if dimensions else None,
        max_input_tokens=_setting("MIRAGE_OPENAI_MAX_INPUT_TOKENS", None),
        timeout=float(_setting("MIRAGE_EMBED_TIMEOUT_SECONDS", 60.0)),
        budget=_budget("openai", model),
    )


_BUILDERS: dict[str, Callable[[], Embedder]] = {
    "hash": _build_hash,
    "local": _build_local,
    "ollama": _build_ollama,
    "openai": _build_openai,
}


def _build_from_path(spec: str) -> Embedder:
    module_name, _, class_name = spec.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        embedder_class = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import embedder class {spec!r}: {exc}") from exc
    return embedder_class()


def get_embedder(spec: str | None = None) -> Embedder:
    """The embedder for `spec`: "hash", "local", "ollama", "openai", or a
    dotted path to a class whose no-argument constructor builds one. None
    means settings.MIRAGE_EMBEDDER.

    One instance per spec per process, shared by every caller in it (the
    local model takes seconds to load and hundreds of MB to hold). The cache
    is dropped in a forked child, so a prefork worker never reuses an
    instance built in its parent. Settings are read when an instance is
    built; call `clear_embedder_cache()` after changing them.
    """
    if spec is None:
        spec = _setting("MIRAGE_EMBEDDER", _DEFAULT_SPEC) or _DEFAULT_SPEC
    spec = spec.strip()
    global _cache_pid
    with _cache_lock:
        if _cache_pid != os.getpid():
            _cache.clear()
            _batchers.clear()
            _cache_pid = os.getpid()
        embedder = _cache.get(spec)
        if embedder is None:
            builder = _BUILDERS.get(spec.lower())
            if builder is not None:
                embedder = builder()
            elif "." in spec:
                embedder = _build_from_path(spec)
            else:
                raise ValueError(
                    f"unknown embedder {spec!r}: expected one of "
                    f"{', '.join(sorted(_BUILDERS))} or a dotted path to a class"
                )
            _cache[spec] = embedder
        return embedder


def get_batcher(spec: str | None = None) -> MicroBatcher:
    """The process's micro-batcher in front of `get_embedder(spec)`: the
    concurrent embed tasks of one worker share it."""
    embedder = get_embedder(spec)
    with _cache_lock:
        batcher = _batchers.get(id(embedder))
        if batcher is None or batcher.embedder is not embedder:
            batcher = MicroBatcher(
                embedder,
                max_batch=int(_setting("MIRAGE_EMBED_BATCH_SIZE", 64)),
                max_wait_seconds=float(_setting("MIRAGE_EMBED_BATCH_WAIT_MS", 10)) / 1000,
            )
            _batchers[id(embedder)] = batcher
        return batcher


def clear_embedder_cache() -> None:
    """Forget every cached instance (for tests and after settings change)."""
    with _cache_lock:
        _cache.clear()
        _batchers.clear()
