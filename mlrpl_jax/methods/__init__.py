"""Method plug-ins: each method is one module with one `Method` subclass (see base.py).

The registry maps the config value `config.method` to the class; the train loop never
branches on the method name.
"""

from __future__ import annotations

import importlib

_REGISTRY = {
    "baseline": "mlrpl_jax.methods.baseline:PartialBCEBaseline",
    "sst": "mlrpl_jax.methods.sst:StructuredSemanticTransfer",
    "hst": "mlrpl_jax.methods.hst:HeterogeneousSemanticTransfer",
    "sarb": "mlrpl_jax.methods.sarb:SARB",
    "dsrb": "mlrpl_jax.methods.dsrb:DSRB",
    "satl": "mlrpl_jax.methods.satl:SemanticAwareThresholdLearning",
}


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method_class(name: str):
    """Returns the Method subclass registered under `name`."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown method '{name}'; valid methods: {', '.join(available_methods())}")
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
