"""The methods a :class:`~wsserver.rpc.JsonRpc` service exposes, by name.

A table is filled from a function, a dict (nested dicts give dotted names:
``{"files": {"open": f}}`` is ``files.open``) or an object (its public
callable attributes, one level deep). Each method's signature is read once
at registration, so that params that do not fit are answered with
``Invalid params`` before the method runs, not mistaken for a ``TypeError``
inside it.

**The client rule**: a method that declares a keyword-only parameter named
``client`` (``def rename(path, new, *, client)``) gets the calling
:class:`~wsserver.Client` in it; the caller cannot pass it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import INVALID_PARAMS, Params, RpcError

__all__ = ["Method", "MethodTable"]


@dataclass(frozen=True, slots=True)
class Method:
    """One exposed function, with what its signature says."""

    name: str
    function: Callable[..., Any]
    #: None when the signature cannot be read (some built-ins): the params are then not checked before the call.
    signature: inspect.Signature | None
    wants_client: bool

    @classmethod
    def of(cls, name: str, function: Callable[..., Any]) -> Method:
        try:
            signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            signature = None
        parameter = signature.parameters.get("client") if signature is not None else None
        wants_client = parameter is not None and parameter.kind is inspect.Parameter.KEYWORD_ONLY
        return cls(name, function, signature, wants_client)

    def arguments(self, params: Params, client: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments for ``params`` (a list, a
        dict or none), or :class:`RpcError` ``Invalid params``."""
        args: tuple[Any, ...] = tuple(params) if isinstance(params, list) else ()
        kwargs: dict[str, Any] = dict(params) if isinstance(params, dict) else {}
        if self.wants_client:
            if "client" in kwargs:
                raise RpcError(INVALID_PARAMS, data="'client' is not a parameter a caller may give")
            kwargs["client"] = client
        if self.signature is not None:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise RpcError(INVALID_PARAMS, data=str(exc)) from None
        return args, kwargs


class MethodTable:
    """Methods by their full name."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def add(self, name: str, function: Callable[..., Any]) -> None:
        """Expose ``function`` as ``name``; a name taken already is replaced."""
        if not isinstance(name, str) or not name or name.startswith("rpc."):
            # Section 4: names that begin with "rpc." are the specification's own.
            raise ValueError(f"{name!r} cannot name a JSON-RPC method (empty, or reserved by the 'rpc.' prefix)")
        if not callable(function):
            raise TypeError(f"the method {name!r} is not callable: {function!r}")
        self._methods[name] = Method.of(name, function)

    def remove(self, name: str) -> None:
        self._methods.pop(name, None)

    def update(self, methods: Callable[..., Any] | Mapping[str, Any] | object, prefix: str = "") -> None:
        """Expose every method in ``methods``: a mapping (a value that is
        not callable, a mapping or an object, adds a dotted level), or an
        object's public callable attributes."""
        if isinstance(methods, Mapping):
            for key, value in methods.items():
                name = f"{prefix}{key}"
                if callable(value):
                    self.add(name, value)
                else:
                    self.update(value, name + ".")
            return
        for key in dir(methods):
            if not key.startswith("_"):
                value = getattr(methods, key)
                if callable(value) and not isinstance(value, type):
                    self.add(prefix + key, value)
