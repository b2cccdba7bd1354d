"""Names of the tool handlers this deployment can run.

Handlers are written in the apps that own their dependencies (the chat tools live in
`conversations`) and register themselves here when Django starts, so that a `tool.spec`
naming a handler nobody provides is refused when it is written, not when a chat needs it.
"""

from collections.abc import Callable

_handlers: dict[str, Callable] = {}


def register_handler(name: str, handler: Callable) -> None:
    _handlers[name] = handler


def handler_for(name: str) -> Callable | None:
    return _handlers.get(name)


def handler_names() -> list[str]:
    return sorted(_handlers)
