"""fa-jax: sweepable JAX simulations of how the optimiser's implicit bias picks features (and robustness).

Modules: ``config`` (frozen configs, traced vs static), ``data`` (generators), ``models``, ``losses``, ``optim``
(optax by name), ``trainer`` (the scan-based loop), ``sweep`` (vmapped, sharded, resumable grids), ``sweepfile`` (TOML sweep files), ``results``
(labelled xarray results), ``metrics`` (one module per
family), ``theory`` (closed forms per paper), ``experiments`` (per-run pure functions), ``plotting``,
``summary`` (the shared ``summary.json``), ``cli``.
"""
__version__ = "0.1.0"

__all__ = ["load_results", "run_spec"]


def __getattr__(name):  # lazy: importing fa_jax stays cheap
    if name == "load_results":
        from .results import load_results

        return load_results
    if name == "run_spec":
        from .sweepfile import run_spec

        return run_spec
    raise AttributeError(f"module 'fa_jax' has no attribute {name!r}")
