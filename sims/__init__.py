"""Runnable simulations, one per paper. Each module exposes ``PRESETS`` (name -> config) and
``run(cfg, out_dir, progress=True, command="")`` which writes figures and ``summary.json``; ``DESCRIPTIONS`` holds
one line per sim. A sim's config fields are described by their trailing comments (``fa-jax run NAME --help``).

Sweep-file analyses (``analysis = "fa_jax_sims.regimes:analyse"``, or a name this package registers with
:func:`fa_jax.register_analysis` when imported) are ``analyse(ds, spec, out_dir) -> (checks, metrics)`` of the
labelled results (``fa_jax.load_results``)."""
import importlib

from fa_jax.sweepfile import register_analysis

# name -> module; imported on first use so one sim's import cost (or a missing optional file) never touches another.
_SIMS = {
    "feature-averaging": "fa_jax_sims.feature_averaging",
    "feature-averaging-real": "fa_jax_sims.feature_averaging_real",
    "sgd-support": "fa_jax_sims.sgd_support",
    "sgd-vs-adaptive": "fa_jax_sims.sgd_vs_adaptive",
    "hold-me-tight": "fa_jax_sims.hold_me_tight",
    "agop-collapse": "fa_jax_sims.agop_collapse",
}
NAMES = tuple(sorted(_SIMS))
# one line each for `fa-jax list` (read without importing the sims)
DESCRIPTIONS = {
    "agop-collapse": "deep neural collapse via the AGOP: NC1/NC2 over Deep RFM and MLP layers (arXiv 2402.13728)",
    "feature-averaging": "two-layer nets average cluster centres: cosines, flip radius, robust accuracy "
                         "(arXiv 2410.10322)",
    "feature-averaging-real": "feature averaging on real images: binary vs 10-class supervision (arXiv 2410.10322)",
    "hold-me-tight": "margins along DCT subspaces: NADs, tiny features, adversarial training (arXiv 2002.06349)",
    "sgd-support": "SGD learns the support: irrelevant weights under GD, SGD per batch size (arXiv 2406.11110)",
    "sgd-vs-adaptive": "SGD vs signGD / Adam / RMSProp: natural-signal regression, net robustness "
                       "(arXiv 2308.06703)",
}


def get_sim(name: str):
    """The simulation module registered as ``name`` (ValueError listing the allowed names otherwise)."""
    if name not in _SIMS:
        raise ValueError(f"unknown simulation {name!r}; allowed: {', '.join(NAMES)}")
    return importlib.import_module(_SIMS[name])


# a sweep file's ``analysis = "regimes"`` (as in manifests written before sims/regimes.toml named the function);
# registered by reference: sims.regimes is imported only when a sweep runs it
register_analysis("regimes", "fa_jax_sims.regimes:analyse")
# manifests written while this package was installed as `sims` (before issue 20) name the old module path
register_analysis("sims.regimes:analyse", "fa_jax_sims.regimes:analyse")
