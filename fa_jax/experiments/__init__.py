"""Per-run pure functions (``run_xxx(cfg) -> dict of arrays``) and the open registry that sweep files name them by.

An :class:`Experiment` ties a config class to its run function and tells the sweep machinery how to label its
outputs: which config fields a ``seed`` axis sets, which field is the width and which its static bucket, and the
named axes of each output (``fnmatch`` patterns on ``/``-joined output paths, first pattern of the right rank wins;
unnamed axes get ``<name>_dim<i>``), where each axis's coordinate values come from (an output that is the same in
every run, or ``"config:<dotted.path>"``: a config field no sweep axis changes), and optional labels and units.

A sweep file's ``experiment`` is either a registered name (:func:`experiment_names`: the built-in experiments
behind the paper simulations, plus whatever :func:`register_experiment` added in this process) or a reference
``"package.module:attribute"`` to an :class:`Experiment`, or to a zero-argument callable returning one
(:func:`get_experiment`). A sweep writes :func:`describe` of its experiment into its manifest, so its results
load in a process that cannot import the experiment's module.

An experiment whose runs all read the same large arrays (a dataset) gives ``shared``: ``shared(cfg) -> {name:
array}`` of the config's static fields; the engine passes them to each group's compiled program as unbatched
arguments (counted by the memory plan, their content hashed into the chunk file names) and calls
``run(cfg, arrays)`` (:mod:`fa_jax.sweep`, "Shared inputs"). An experiment whose runs generate their data from a
few config fields (a data seed) gives ``data``: ``data(cfg) -> pytree``; the engine calls ``run(cfg, data=...)``
and draws the data once for all runs of a compiled group that agree on those fields (:mod:`fa_jax.sweep`, "Generated
data shared by runs").
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence

__all__ = ["EXPERIMENTS", "Experiment", "describe", "experiment_names", "get_experiment", "import_ref",
           "register_experiment"]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """How the sweep engine runs and labels one kind of run (see the module docstring)."""

    name: str
    config: Callable  # () -> the default config (a frozen dataclass with validate())
    run: Callable  # run(cfg) -> dict of arrays, one run; a module-level function (programs are cached by it)
    seeds: tuple[str, ...] = ()  # fields a ``seed`` axis sets (all to the same value); traced fields only
    width: str | None = None  # dotted path of the (traced) width ...
    bucket: str | None = None  # ... and of its static padded size
    dims: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (output pattern, axis names)
    coords: tuple[tuple[str, str], ...] = ()  # (axis name, output holding its values | "config:<dotted.path>")
    labels: tuple[tuple[str, str], ...] = ()  # (output pattern, long name): the Dataset variable's ``long_name``
    units: tuple[tuple[str, str], ...] = ()  # (output pattern, units): the variable's ``units``
    description: str = ""
    # () -> a context manager the engine enters while it lowers, compiles and runs the sweep's programs, for
    # experiments that need a process setting (e.g. float64: ``jax.enable_x64(True)``); None: nothing
    context: Callable | None = None
    # cfg -> {name: array}: inputs that depend only on the config's static fields (a dataset), handed to every run
    # of a compiled group as unbatched program arguments, never baked in as constants; the engine then calls
    # ``run(cfg, arrays)`` (fa_jax.sweep, "Shared inputs"). None: ``run(cfg)``
    shared: Callable | None = None
    # cfg -> pytree of arrays: the data a run generates from its config (e.g. a synthetic set from its data seed);
    # the engine then calls ``run(cfg, data=...)`` (``run(cfg, arrays, data=...)`` with ``shared``) and draws the
    # data once per block of runs that agree on every field it reads (fa_jax.sweep, "Generated data shared by
    # runs"). None: the run draws its own
    data: Callable | None = None

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name and ":" not in self.name):
            raise ValueError(f"invalid Experiment name={self.name!r}: allowed a non-empty string without ':'")
        for f in ("config", "run"):
            if not callable(getattr(self, f)):
                raise TypeError(f"invalid Experiment {f}={getattr(self, f)!r}: allowed a callable")
        if self.data is not None and not callable(self.data):
            raise TypeError(f"invalid Experiment data={self.data!r}: allowed a callable data(cfg) -> pytree of "
                            "arrays, or None")
        if self.shared is not None and not callable(self.shared):
            raise TypeError(f"invalid Experiment shared={self.shared!r}: allowed a callable shared(cfg) -> "
                            "{name: array}, or None")
        # tuples (not lists) so experiments compare and hash by value; accept lists from users
        object.__setattr__(self, "seeds", tuple(self.seeds))
        for f in ("dims", "coords", "labels", "units"):
            pairs = tuple((str(p), tuple(v) if f == "dims" else str(v)) for p, v in getattr(self, f))
            object.__setattr__(self, f, pairs)


def describe(exp: Experiment) -> dict:
    """JSON-able description of ``exp`` (what a sweep manifest records and ``load_results`` reads back)."""
    def qualname(fn):
        return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"

    return {"name": exp.name, "run": qualname(exp.run), "config": qualname(exp.config), "seeds": list(exp.seeds),
            "width": exp.width, "bucket": exp.bucket, "dims": [[p, list(d)] for p, d in exp.dims],
            "coords": [list(c) for c in exp.coords], "labels": [list(x) for x in exp.labels],
            "units": [list(x) for x in exp.units], "description": exp.description,
            "context": None if exp.context is None else qualname(exp.context),
            "shared": None if exp.shared is None else qualname(exp.shared),
            "data": None if exp.data is None else qualname(exp.data)}


# ----------------------------------------------------------------------------- references "package.module:attr"
@contextlib.contextmanager
def _on_path(search: Sequence[str]) -> Iterator[None]:
    """``search`` folders first on ``sys.path`` for the duration (a module next to a sweep file)."""
    added = [p for p in search if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)


def import_ref(ref: str, what: str = "reference", search: Sequence[str] = ()):
    """The object ``"package.module:attribute"`` (dotted attributes allowed) names, importing the module with the
    ``search`` folders first on ``sys.path``. ValueError naming ``what`` and the reference if it cannot be found."""
    mod_name, sep, attr = ref.partition(":")
    if not (sep and mod_name and attr):
        raise ValueError(f"invalid {what}={ref!r}: allowed 'package.module:attribute'")
    try:
        with _on_path(search):
            obj = importlib.import_module(mod_name)
    except ImportError as e:
        where = f" (searched {', '.join(search)} and sys.path)" if search else ""
        raise ValueError(f"invalid {what}={ref!r}: cannot import module {mod_name!r}{where}: {e}; put it on "
                         "PYTHONPATH or next to the sweep file") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"invalid {what}={ref!r}: module {mod_name!r} has no attribute {attr!r}") from None
    return obj


# ----------------------------------------------------------------------------- the registry
_REGISTERED: dict[str, Experiment] = {}


def register_experiment(exp: Experiment, *, replace: bool = False) -> Experiment:
    """Make ``exp`` nameable as ``exp.name`` in sweep files and :func:`get_experiment` (this process only).

    Registering an equal experiment again is a no-op; a different experiment under a taken name (built-in or
    registered) raises ValueError unless ``replace``. Returns ``exp``."""
    if not isinstance(exp, Experiment):
        raise TypeError(f"invalid experiment={exp!r}: allowed an fa_jax.experiments.Experiment")
    if not replace and exp.name in experiment_names():
        old = get_experiment(exp.name)
        if old != exp:
            raise ValueError(f"invalid experiment name={exp.name!r}: already registered for a different experiment "
                             f"(run {describe(old)['run']}); choose another name or pass replace=True")
    _REGISTERED[exp.name] = exp
    return exp


def experiment_names() -> tuple[str, ...]:
    """Every name a sweep file can give: the built-in experiments, then those registered in this process."""
    return EXPERIMENTS + tuple(n for n in _REGISTERED if n not in _BUILTIN)


def get_experiment(ref: str, *, search: Sequence[str] = ()) -> Experiment:
    """The experiment ``ref`` names: a registered name, or ``"package.module:attribute"`` (an :class:`Experiment`
    or a zero-argument callable returning one; the module is imported with the ``search`` folders first on
    ``sys.path``). ValueError listing the allowed names otherwise (TypeError: ``ref`` names something else)."""
    if not isinstance(ref, str):
        raise TypeError(f"invalid experiment={ref!r}: allowed a registered name or 'package.module:attribute'")
    if ":" in ref:
        obj = import_ref(ref, "experiment", search)
        if not isinstance(obj, Experiment) and callable(obj):
            obj = obj()
        if not isinstance(obj, Experiment):
            raise TypeError(f"invalid experiment={ref!r}: it names {type(obj).__name__}, not an "
                             "fa_jax.experiments.Experiment (or a zero-argument function returning one)")
        return obj
    if ref in _REGISTERED:
        return _REGISTERED[ref]
    if ref in _BUILTIN:
        return _BUILTIN[ref]()
    raise ValueError(f"invalid experiment={ref!r}: allowed one of {experiment_names()}, or "
                     "'package.module:attribute' naming an fa_jax.experiments.Experiment")


# ----------------------------------------------------------------------------- built-in experiments
_STEP = (("records/*", ("step",)), ("plan", ("step",)))
_STEP_COORD = (("step", "plan"),)


@contextlib.contextmanager
def _float64(single_threaded_lapack: bool = False):
    """Float64 programs, as the simulations run these experiments (their metrics reach 1e-10)."""
    import jax

    with jax.enable_x64(True):
        if single_threaded_lapack:
            from .agop_collapse import lapack_single_threaded

            with lapack_single_threaded():
                yield
        else:
            yield


def _float64_single_lapack():
    return _float64(True)


def _feature_averaging() -> Experiment:
    from .feature_averaging import FARun, fa_data, run_feature_averaging

    return Experiment(
        name="feature-averaging",
        config=FARun,
        run=run_feature_averaging,
        data=fa_data,  # runs on one data seed (every lr, optimiser, width of a seed) share one draw
        seeds=("data_seed", "model_seed"),
        width="model.width",
        bucket="model.bucket",
        dims=(
            ("records/*", ("step",)),
            ("plan", ("step",)),
            ("eps", ("eps",)),
            ("robust/*/acc", ("eps",)),
            ("robust/*/flip", ("point",)),
            ("attack_direction/*", ("point",)),
            ("grad_cos", ("point",)),
            ("test_y", ("point",)),
            ("features/cos", ("cos_row", "cos_col")),
        ),
        coords=(("step", "plan"), ("eps", "eps")),
        labels=(("robust/*/acc", "robust accuracy (l2 PGD)"), ("robust/*/r50", "radius of 50% robust accuracy"),
                ("records/loss", "training loss"), ("records/test_acc", "test accuracy")),
        units=(("robust/*/r50", "l2 input norm"), ("eps", "l2 input norm")),
        description="two-layer net on orthogonal clusters (arXiv 2410.10322): feature averaging and robustness",
    )


def _linear() -> Experiment:
    from .linear import LinearRun, run_linear

    return Experiment(
        name="linear-regression", config=LinearRun, run=run_linear, seeds=("data_seed", "model_seed"),
        dims=(("records/w", ("step", "coef")), ("records/*", ("step",)), ("plan", ("step",)),
              ("w", ("coef",)), ("w_star", ("coef",)), ("w0", ("coef",))),
        coords=(("step", "plan"),),
        labels=(("records/loss", "training loss"),),
        description="linear regression by any optimiser (closed form for GD): the engine's cheapest experiment",
    )


def _feature_averaging_real() -> Experiment:
    from .feature_averaging_real import FARealRun, run_feature_averaging_real, shared_real_data

    return Experiment(
        name="feature-averaging-real", config=FARealRun, run=run_feature_averaging_real, seeds=("model_seed",),
        shared=shared_real_data,
        dims=(*_STEP, ("eps", ("eps",)), ("robust/*/acc", ("eps",)),
              ("features/cos", ("class_i", "class_j")), ("features/cos_raw", ("class_i", "class_j")),
              ("features/head_cos", ("class_i", "head_output"))),
        coords=(*_STEP_COORD, ("eps", "eps")),
        labels=(("clean/*", "clean test accuracy of the binary read-out"),
                ("robust/*/acc", "robust accuracy (full-dimensional l2 PGD)"),
                ("robust/*/r50", "radius of 50% robust accuracy"),
                ("features/within_side", "centred class-mean cosine, same side"),
                ("features/cross_side", "centred class-mean cosine, different sides")),
        units=(("eps", "l2 norm, [0, 1] pixels"), ("robust/*/r50", "l2 norm, [0, 1] pixels")),
        description="image net (MLP / conv) on a binary partition of real images (arXiv 2410.10322, P14)",
    )


def _sgd_support() -> Experiment:
    from .sgd_support import SupportRun, run_sgd_support

    return Experiment(
        name="sgd-support", config=SupportRun, run=run_sgd_support, seeds=("seed", "traj_seed"),
        dims=(*_STEP, ("w1", ("input", "hidden")), ("w1_init", ("input", "hidden"))),
        coords=_STEP_COORD,
        labels=(("records/irr", "||W_irr|| / ||W_irr(0)||"), ("records/rel", "||W_rel|| / ||W_rel(0)||"),
                ("records/loss", "training MSE"), ("records/test", "test MSE"),
                ("support_score", "fraction of the irrelevant first-layer norm removed")),
        description="MLP on support-learning data trained by (clipped) SGD (arXiv 2406.11110)",
    )


def _adaptive_linear() -> Experiment:
    from .adaptive_linear import AdaptiveLinearRun, run_adaptive_linear

    return Experiment(
        name="adaptive-linear", config=AdaptiveLinearRun, run=run_adaptive_linear, seeds=("seed",),
        dims=(("records/e_tilde", ("step", "frequency")), *_STEP, ("w_tilde", ("frequency",)),
              ("w0_tilde", ("frequency",)), ("sigma_tilde", ("frequency",)), ("w_star_tilde", ("frequency",))),
        coords=_STEP_COORD,
        labels=(("records/std_risk", "standard risk R_s"), ("records/adv_risk", "adversarial risk R_a (T1)"),
                ("records/irr_norm", "weight norm on zero-variance frequencies"),
                ("records/e_tilde", "error in DCT coordinates")),
        description="linear regression on natural signals by GD / signGD / Adam / RMSProp (arXiv 2308.06703)",
        context=_float64,
    )


def _adaptive_nets() -> Experiment:
    from .adaptive_nets import AdaptiveNetRun, run_adaptive_net

    return Experiment(
        name="adaptive-nets", config=AdaptiveNetRun, run=run_adaptive_net, seeds=("seed",),
        dims=(*_STEP, ("l2_acc", ("l2_eps",)), ("linf_acc", ("linf_eps",)), ("noise_acc", ("noise",)),
              ("band_noise_acc/*", ("band_std",)), ("band_noise_radial", ("radial_band",)), ("lip/layers_*", ("layer",)),
              ("lip_init/layers_*", ("layer",))),
        coords=(*_STEP_COORD, ("l2_eps", "config:attack.l2_eps"), ("linf_eps", "config:attack.linf_eps"),
                ("noise", "config:attack.noise_std"), ("band_std", "config:attack.band_std")),
        labels=(("clean_acc", "clean test accuracy"), ("l2_acc", "l2 PGD robust accuracy"),
                ("linf_acc", "l-inf PGD robust accuracy"), ("noise_acc", "accuracy under Gaussian noise"),
                ("band_noise_acc/relevant", "accuracy under Gaussian noise on the relevant DCT band"),
                ("band_noise_acc/irrelevant", "accuracy under Gaussian noise on the irrelevant DCT band"),
                ("band_noise_radial", "accuracy under Gaussian noise on each radial DCT band (0 = lowest)"),
                ("removal_change", "relative change of the training set by its frequency removal"),
                ("lip/bound_op", "product of layer operator norms")),
        description="image net trained by SGD / Adam / RMSProp on natural-signal images (arXiv 2308.06703)",
    )


def _hold_me_tight() -> Experiment:
    from .hold_me_tight import HMTRun, run_hold_me_tight, shared_image_data

    return Experiment(
        name="hold-me-tight", config=HMTRun, run=run_hold_me_tight, seeds=("model_seed", "synth.seed"),
        shared=shared_image_data,
        dims=(*_STEP, ("block/*", ("block", "point")), ("sub/*", ("subspace", "point")), ("correct", ("point",))),
        coords=_STEP_COORD,
        labels=(("block/margin", "margin along a DCT block subspace"), ("sub/margin", "margin along a subspace"),
                ("test_acc", "test accuracy")),
        units=(("block/margin*", "l2 input norm"), ("sub/margin*", "l2 input norm")),
        description="margins along subspaces by subspace DeepFool (Hold me tight!, arXiv 2002.06349)",
    )


def _agop_collapse() -> Experiment:
    from .agop_collapse import AgopCollapseRun, run_agop_collapse, shared_collapse_data

    return Experiment(
        name="agop-collapse", config=AgopCollapseRun, run=run_agop_collapse, shared=shared_collapse_data,
        seeds=("data.mixture.seed", "rfm.feature_seed", "mlp.seed"),
        # Deep RFM layers and MLP hidden layers are different axes (their lengths differ in one sweep of both)
        dims=(("layers/*", ("rfm_layer",)), ("records/*", ("step", "layer")), *_STEP),
        coords=_STEP_COORD,
        labels=(("layers/*/nc1", "NC1 (within / between class variability)"),
                ("records/nc1/*", "NC1 per hidden layer"), ("records/loss", "training MSE")),
        description="Deep RFM and MLP neural collapse by the AGOP (arXiv 2402.13728)",
        context=_float64_single_lapack,
    )


_BUILTIN: dict[str, Callable[[], Experiment]] = {
    "feature-averaging": _feature_averaging,
    "linear-regression": _linear,
    "feature-averaging-real": _feature_averaging_real,
    "sgd-support": _sgd_support,
    "adaptive-linear": _adaptive_linear,
    "adaptive-nets": _adaptive_nets,
    "hold-me-tight": _hold_me_tight,
    "agop-collapse": _agop_collapse,
}
EXPERIMENTS = tuple(_BUILTIN)  # the built-in names; experiment_names() adds the registered ones
