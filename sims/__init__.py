"""Runnable simulations, one per paper. Each module exposes ``PRESETS`` (name -> config) and
``run(cfg, out_dir, progress=True, command="")`` which writes figures and ``summary.json``."""
from . import feature_averaging

REGISTRY = {"feature-averaging": feature_averaging}
