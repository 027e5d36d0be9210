"""fa-jax: sweepable JAX simulations of how the optimiser's implicit bias picks features (and robustness).

Modules: ``config`` (frozen configs, traced vs static), ``data`` (generators), ``models``, ``losses``, ``optim``
(optax by name), ``trainer`` (the scan-based loop), ``sweep`` (vmapped grids), ``metrics`` (one module per
family), ``theory`` (closed forms per paper), ``experiments`` (per-run pure functions), ``plotting``,
``summary`` (the shared ``summary.json``), ``cli``.
"""
__version__ = "0.1.0"
