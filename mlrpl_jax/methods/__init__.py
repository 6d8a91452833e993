"""Method plug-ins: each method is one `Method` subclass (base.py) with a `name`.

A subclass that sets `name` registers itself when its module is imported; the lookup below
imports every module under `mlrpl_jax.methods` first, so a new method needs only its own
module (or folder) and config files. The train loop never branches on the method name.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def _import_method_modules() -> None:
    """Imports every module of this package once, so that their Method subclasses register."""
    for module in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        importlib.import_module(module.name)


def registered_methods() -> dict:
    """{name: Method subclass} of every method defined so far (package modules included)."""
    _import_method_modules()
    from mlrpl_jax.methods.base import registered_method_classes

    return registered_method_classes()


def available_methods() -> list[str]:
    return sorted(registered_methods())


def get_method_class(name: str):
    """Returns the Method subclass registered under `name`."""
    methods = registered_methods()
    if name not in methods:
        raise KeyError(f"unknown method '{name}'; valid methods: {', '.join(sorted(methods))}")
    return methods[name]
