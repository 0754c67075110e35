"""Routers built per dispatcher, not at import time.

aiogram attaches a Router to exactly one parent, so module-level routers would tie the handlers to
the first dispatcher built (tests and benches build several). Handler modules declare their
handlers on a `RouterSpec`; `build()` returns a fresh Router with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiogram import Router

Fn = Callable[..., Any]


class RouterSpec:
    def __init__(self, name: str) -> None:
        self.name = name
        self._root_filters: list[tuple[str, tuple[Any, ...]]] = []
        self._handlers: list[tuple[str, tuple[Any, ...], Fn]] = []

    def filter(self, observer: str, *filters: Any) -> None:
        self._root_filters.append((observer, filters))

    def _on(self, observer: str, *filters: Any) -> Callable[[Fn], Fn]:
        def register(fn: Fn) -> Fn:
            self._handlers.append((observer, filters, fn))
            return fn

        return register

    def message(self, *filters: Any) -> Callable[[Fn], Fn]:
        return self._on("message", *filters)

    def callback_query(self, *filters: Any) -> Callable[[Fn], Fn]:
        return self._on("callback_query", *filters)

    def build(self) -> Router:
        router = Router(name=self.name)
        for observer, filters in self._root_filters:
            router.observers[observer].filter(*filters)
        for observer, filters, fn in self._handlers:
            router.observers[observer].register(fn, *filters)
        return router
