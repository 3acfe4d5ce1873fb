"""Finding launchers and notifiers: the built-ins plus entry points.

A package adds one by declaring an entry point in the group ``node.launchers`` or
``node.notifiers`` whose name is what ``GATEWAY_LAUNCHER`` (or the notifier setting) names and
whose object is the class. A built-in name always means the built-in: an installed package
cannot silently replace ``sim`` or ``ibc``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from loguru import logger

LAUNCHER_GROUP = "node.launchers"
NOTIFIER_GROUP = "node.notifiers"

BUILTIN_LAUNCHERS: dict[str, str] = {
    "sim": "node.plugins.launchers.sim:SimLauncher",
    "ibc": "node.plugins.launchers.ibc:IbcLauncher",
    "exe": "node.plugins.launchers.exe:ExeLauncher",
    "external": "node.plugins.launchers.external:ExternalLauncher",
}


def _discovered(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def _import(target: str) -> type:
    module, _, attribute = target.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if not isinstance(found, type):
        raise TypeError(f"{target} is not a class")
    return found


def _builtin_notifiers() -> dict[str, type]:
    from node.plugins.notifiers import BUILTIN_NOTIFIERS  # lazy: notifiers import httpx

    return dict(BUILTIN_NOTIFIERS)


def launcher_names() -> list[str]:
    return sorted({*BUILTIN_LAUNCHERS, *_discovered(LAUNCHER_GROUP)})


def notifier_names() -> list[str]:
    return sorted({*_builtin_notifiers(), *_discovered(NOTIFIER_GROUP)})


def launcher_class(name: str) -> type:
    """The launcher class called ``name``; ValueError listing the known names otherwise."""
    if name in BUILTIN_LAUNCHERS:
        _warn_shadowed(LAUNCHER_GROUP, name)
        return _import(BUILTIN_LAUNCHERS[name])
    return _load(LAUNCHER_GROUP, name, "launcher", launcher_names())


def notifier_class(name: str) -> type:
    """The notifier class called ``name``; ValueError listing the known names otherwise."""
    builtins = _builtin_notifiers()
    if name in builtins:
        _warn_shadowed(NOTIFIER_GROUP, name)
        return builtins[name]
    return _load(NOTIFIER_GROUP, name, "notifier", notifier_names())


def _load(group: str, name: str, kind: str, known: list[str]) -> type:
    entry = _discovered(group).get(name)
    if entry is None:
        raise ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)}")
    try:
        found = entry.load()
    except Exception as exc:
        raise ValueError(
            f"{kind} {name!r} (entry point {entry.value}) cannot be loaded: {exc}"
        ) from exc
    if not isinstance(found, type):
        raise ValueError(f"{kind} {name!r} (entry point {entry.value}) is not a class")
    return found


def _warn_shadowed(group: str, name: str) -> None:
    entry = _discovered(group).get(name)
    if entry is not None:
        logger.warning(
            "entry point {} in {} ignored: {!r} is a built-in name", entry.value, group, name
        )
