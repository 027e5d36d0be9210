"""Runnable simulations, one per paper. Each module exposes ``PRESETS`` (name -> config) and
``run(cfg, out_dir, progress=True, command="")`` which writes figures and ``summary.json``.

``ANALYSES`` are what a sweep file's ``analysis = "NAME"`` runs on the finished sweep:
``analyse(ds, spec, out_dir) -> (checks, metrics)`` given the labelled results (``fa_jax.load_results``)."""
from . import feature_averaging, feature_averaging_real, sgd_support, sgd_vs_adaptive

REGISTRY = {
    "feature-averaging": feature_averaging,
    "feature-averaging-real": feature_averaging_real,
    "sgd-support": sgd_support,
    "sgd-vs-adaptive": sgd_vs_adaptive,
}

_ANALYSES = {"regimes": "sims.regimes"}


def get_analysis(name: str):
    """The ``analyse`` function registered as ``name`` (ValueError listing the allowed names otherwise)."""
    import importlib

    if name not in _ANALYSES:
        raise ValueError(f"invalid analysis={name!r}: allowed one of {tuple(_ANALYSES)}")
    return importlib.import_module(_ANALYSES[name]).analyse
