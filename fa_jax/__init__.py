"""fa-jax: sweepable JAX simulations of how the optimiser's implicit bias picks features (and robustness).

Modules: ``config`` (frozen configs, traced vs static), ``data`` (generators), ``models``, ``losses``, ``optim``
(optax by name), ``trainer`` (the scan-based loop), ``sweep`` (vmapped, sharded, resumable grids), ``sweepfile``
(TOML sweep files), ``results`` (labelled xarray results), ``metrics`` (one module per family), ``theory`` (closed
forms per paper), ``experiments`` (per-run pure functions; the registry sweep files name them by), ``plotting``,
``summary`` (the shared ``summary.json``), ``cli``.
"""
__version__ = "0.1.0"

__all__ = ["Experiment", "enable_compilation_cache", "load_results", "plot_phase", "register_analysis",
           "register_experiment", "run_spec", "select_runs", "sweep_dataset"]

# public name -> the module defining it (imported on first use: importing fa_jax stays cheap)
_LAZY = {"load_results": "results", "select_runs": "results", "run_spec": "sweepfile", "sweep_dataset": "sweepfile",
         "register_analysis": "sweepfile", "Experiment": "experiments", "register_experiment": "experiments",
         "plot_phase": "plotting.phase", "enable_compilation_cache": "sweep"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fa_jax' has no attribute {name!r}")
