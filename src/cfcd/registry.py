"""``Registry``: the one way cfcd finds pluggable things by name (backbones, classifier heads,
loss terms, samplers, benchmarks, vector engines).

    HEADS = Registry("classifier head", home="cfcd.losses.registry")
    HEADS.register("madacos", "cfcd.losses.madacos:MadaCos")      # imported on first use
    HEADS.build("madacos", 512, 81313, params={"alpha": 0.1}, where="loss.madacos")

An entry is an object, or a ``"module:attribute"`` string imported the first time the entry is
used, so listing the names (for ``--help`` and error messages) imports nothing. Keyword
attributes given to ``register`` travel with the entry (``attrs``): an engine's ``claims`` test
on a location, say. ``register_family`` adds a name prefix that makes entries on demand
(``timm:<model>``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from .errors import ConfigError


class Registry(Mapping):
    """Named entries of one ``kind``; ``home`` is the module where they are registered. A
    read-only mapping of name -> entry (``registry[name]`` is ``get``)."""

    def __init__(self, kind: str, home: str):
        self.kind = kind
        self.home = home
        self._entries: dict[str, Any] = {}
        self._attrs: dict[str, dict] = {}
        self._families: dict[str, Callable[[str], Any]] = {}

    def register(self, name: str, entry: Any = None, **attrs) -> Any:
        """Register ``entry`` (an object or ``"module:attribute"``) as ``name``; without an
        entry, a decorator that registers what it decorates."""
        if entry is None:
            return lambda obj: self.register(name, obj, **attrs)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice ({self.home})")
        self._entries[name] = entry
        self._attrs[name] = attrs
        return entry

    def register_family(self, prefix: str, make: Callable[[str], Any]) -> None:
        """Names ``prefix<rest>`` resolve to ``make(rest)`` (not listed in ``names``)."""
        self._families[prefix] = make

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def attrs(self, name: str) -> dict:
        """The keyword attributes ``name`` was registered with."""
        self._check(name)
        return self._attrs[name]

    def choices(self) -> str:
        """The names for a message or ``--help``: registered ones, then family patterns."""
        return ", ".join([*self._entries, *(f"{p}<name>" for p in self._families)])

    def _check(self, name: str) -> None:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {self.choices()} ({self.home})")

    def get(self, name: str) -> Any:
        """The entry ``name`` (imported now if registered as a string)."""
        if name not in self._entries:
            for prefix, make in self._families.items():
                if name.startswith(prefix):
                    return make(name[len(prefix):])
        self._check(name)
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def parameters(self, name: str, skip: int = 0) -> dict[str, Any]:
        """The settable keyword parameters of the callable ``name`` and their defaults,
        after its first ``skip`` parameters (those its builder fills in)."""
        params = list(inspect.signature(self.get(name)).parameters.values())[skip:]
        return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def check_params(self, name: str, params: dict, skip: int = 0, where: str = "") -> None:
        """Refuse a parameter that the callable ``name`` does not take (``where``: the config
        section ``params`` came from, for the message)."""
        known = self.parameters(name, skip)
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"{where or name}.{unknown[0]}: {name} has no such parameter; "
                              f"its parameters: {', '.join(known) or 'none'}")

    def build(self, name: str, *args, params: dict | None = None, where: str = "") -> Any:
        """``entry(*args, **params)``, the parameters checked first (``check_params``)."""
        params = dict(params or {})
        self.check_params(name, params, skip=len(args), where=where)
        return self.get(name)(*args, **params)
