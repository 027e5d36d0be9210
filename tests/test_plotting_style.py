"""The shared figure style (fa_jax/plotting/style.py, issue 20): geometric bands for log axes, colour scales centred
on the theory value, two-column layouts, legends off the data, and bad input named."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import assert_readable_png

from fa_jax.plotting import common, style


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _band_edges(ax):
    """(lower, upper) edges of the one fill_between band of ``ax``, per x (its path: along the lower edge, back
    along the upper one)."""
    (poly,) = ax.collections
    v = poly.get_paths()[0].vertices
    out = {}
    for x, y in v:
        out.setdefault(float(x), set()).add(float(y))
    return {x: (min(ys), max(ys)) for x, ys in out.items()}


def test_geometric_band_equals_exp_mean_log_on_known_inputs():
    """Seeds (1, 100) and (10, 10): geometric mean 10 in both columns; band 10 x/÷ e^(sd of log), sd of log of
    (1, 100) = ln 10 -> [1, 100]; of (10, 10) = 0 -> [10, 10]."""
    _fig, ax = plt.subplots()
    line = style.geometric_band(ax, [0.0, 1.0], np.array([[1.0, 10.0], [100.0, 10.0]]), label="g")
    np.testing.assert_allclose(line.get_ydata(), [10.0, 10.0], rtol=1e-12)
    edges = _band_edges(ax)
    np.testing.assert_allclose(edges[0.0], [1.0, 100.0], rtol=1e-12)
    np.testing.assert_allclose(edges[1.0], [10.0, 10.0], rtol=1e-12)
    assert line.get_label() == "g"


def test_geometric_band_stays_positive_where_sd_exceeds_mean():
    """Losses (1e-3, 10, 1e-3): sd 4.7 > mean 3.3, so the arithmetic band dips to -1.4 (the floor of a log axis);
    the geometric band's lower edge is exp(mean log - sd log) > 0. Non-positive and non-finite entries are left
    out of their column."""
    ys = np.array([[1e-3, 5.0], [10.0, -1.0], [1e-3, np.inf]])
    assert ys[:, 0].std() > ys[:, 0].mean()
    _fig, ax = plt.subplots()
    line = style.geometric_band(ax, [0.0, 1.0], ys)
    logs = np.log(ys[:, 0])
    np.testing.assert_allclose(line.get_ydata(), [np.exp(logs.mean()), 5.0], rtol=1e-12)
    lo, hi = _band_edges(ax)[0.0]
    assert lo > 0
    np.testing.assert_allclose([lo, hi], np.exp(logs.mean() + np.array([-1, 1]) * logs.std()), rtol=1e-12)
    _fig, ax = plt.subplots()
    common.band(ax, [0.0, 1.0], ys[:, :1].repeat(2, 1))
    assert _band_edges(ax)[0.0][0] < 0  # what the arithmetic band would draw on the log axis


def test_geometric_band_all_nan_column_is_a_gap():
    _fig, ax = plt.subplots()
    line = style.geometric_band(ax, [1, 2], np.array([[1.0, np.nan], [4.0, -2.0]]))
    y = line.get_ydata()
    np.testing.assert_allclose(y[0], 2.0)
    assert np.isnan(y[1])


def test_arithmetic_band_is_mean_and_sd():
    _fig, ax = plt.subplots()
    line = common.band(ax, [0, 1], np.array([[1.0, 2.0], [3.0, 6.0]]), "a")
    np.testing.assert_allclose(line.get_ydata(), [2.0, 4.0])


@pytest.mark.parametrize(("values", "centre"), [([0.5, 0.9, 1.2], 1.0), ([0.44, 0.45], 0.447), ([2.0, 2.0], 2.0),
                                                 ([np.nan, 3.0], 1.0)])
def test_centred_norm_puts_the_theory_at_the_middle(values, centre):
    """The theory value maps to 0.5 (white of a diverging map) and the range is symmetric about it: equal colours
    mean equal deviations; a constant or NaN input still gives a valid norm."""
    norm = style.centred_norm(values, centre)
    assert float(norm(centre)) == pytest.approx(0.5)
    assert norm.vmax - centre == pytest.approx(centre - norm.vmin)
    finite = np.asarray(values, float)[np.isfinite(values)]
    assert norm.vmin <= finite.min() and finite.max() <= norm.vmax


def test_panels_two_columns_and_spare_cell_removed():
    fig, axes = style.panels(4)
    assert len(axes) == 4 and len(fig.axes) == 4
    assert fig.get_size_inches() == pytest.approx([2 * style.PANEL[0], 2 * style.PANEL[1]])
    rows = sorted({round(ax.get_position().y0, 3) for ax in axes})
    cols = sorted({round(ax.get_position().x0, 3) for ax in axes})
    assert len(rows) == 2 and len(cols) == 2  # 2 x 2
    fig, axes = style.panels(3)
    assert len(axes) == 3 and len(fig.axes) == 3  # the fourth cell is removed, not left empty with axes
    fig, axes = style.panels(1)
    assert len(axes) == 1 and fig.get_size_inches() == pytest.approx(style.PANEL)
    fig, axes = style.panels(3, ncols=3)
    assert fig.get_size_inches() == pytest.approx([3 * style.PANEL[0], style.PANEL[1]])


def test_panels_bad_n_named():
    with pytest.raises(ValueError, match="invalid n=0"):
        style.panels(0)


@pytest.mark.parametrize("where", ["right", "below"])
def test_legend_outside_leaves_the_axes(where):
    """The legend's box lies entirely outside the axes box (right of it or below it): it covers no data."""
    fig, (ax,) = style.panels(1)
    ax.plot([0, 1], [0, 1], label="a line")
    ax.plot([0, 1], [1, 0], label="another line")
    leg = style.legend_outside(ax, where)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    lb, ab = leg.get_window_extent(r), ax.get_window_extent(r)
    assert lb.x0 >= ab.x1 if where == "right" else lb.y1 <= ab.y0
    assert not lb.overlaps(ab)


def test_legend_outside_bad_where_named():
    _fig, ax = plt.subplots()
    ax.plot([0, 1], label="x")
    with pytest.raises(ValueError, match="invalid where='above'"):
        style.legend_outside(ax, "above")


def test_figure_legend_below_all_panels_each_label_once(tmp_path):
    fig, axes = style.panels(2)
    for ax in axes:
        ax.plot([1, 2], [1, 2], label="shared")
    axes[1].plot([1, 2], [2, 1], label="only right")
    leg = style.figure_legend(fig, axes)
    assert [t.get_text() for t in leg.get_texts()] == ["shared", "only right"]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    lb = leg.get_window_extent(r)
    assert all(lb.y1 <= ax.get_window_extent(r).y0 for ax in axes)
    path = tmp_path / "f.png"
    common.save(fig, tmp_path, "f.png")
    assert_readable_png(path)


def test_legend_cell_and_extra_entries_each_label_once():
    from matplotlib.lines import Line2D

    fig, axes = style.panels(3)
    for ax in axes[:2]:
        ax.plot([1, 2], [1, 2], label="shared")
    axes[1].plot([1, 2], [2, 1], label="only right")
    extra = (Line2D([], [], ls="--", label="theory"), Line2D([], [], label="shared"))
    assert style.legend_entries(axes[:2], extra)[1] == ["shared", "only right", "theory"]
    leg = style.legend_cell(axes[2], axes[:2], extra=extra)
    assert [t.get_text() for t in leg.get_texts()] == ["shared", "only right", "theory"]
    assert not axes[2].axison  # the spare cell shows only the legend
    leg = style.figure_legend(fig, axes[:2], extra=extra[:1])
    assert [t.get_text() for t in leg.get_texts()] == ["shared", "only right", "theory"]


def test_ink_reads_on_the_cell():
    assert style.ink((0.02, 0.19, 0.38, 1.0)) == "w"  # dark blue of RdBu_r
    assert style.ink((0.97, 0.97, 0.97, 1.0)) == "k"  # its white middle


def test_styled_applies_the_shared_rc_only_inside():
    before = plt.rcParams["font.size"]

    @style.styled
    def draw():
        return plt.rcParams["font.size"], plt.rcParams["savefig.dpi"]

    assert draw() == (style.RC["font.size"], style.DPI)
    assert plt.rcParams["font.size"] == before


def test_common_reuses_the_style():
    assert common.THEORY is style.THEORY
    assert common.geometric_band is style.geometric_band


def test_save_survives_the_log_axes_of_diverged_runs(tmp_path):
    """A diverging run's records reach 1e300 before they overflow, and a run that diverged is NaN: matplotlib's
    log axes fail to save either (OverflowError formatting ticks near 1e308; 'Data cannot be log-scaled').
    plotting.common.save clamps the first to LOG_TOP and draws the second linear, each saying so on the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fa_jax.plotting.common import LOG_TOP, save

    fig, (big, dead, fine) = plt.subplots(1, 3)
    big.plot([1, 10, 100], [1.0, 1e150, 1e304])
    dead.plot([1, 2, 3], [np.nan, np.nan, np.nan])
    fine.plot([1, 2, 3], [0.1, 1.0, 10.0])
    for ax in (big, dead, fine):
        ax.set_yscale("log")
    name = save(fig, str(tmp_path), "diverged.png")
    assert (tmp_path / name).stat().st_size > 0
    assert big.get_ylim()[1] == LOG_TOP and "off the scale" in big.texts[0].get_text()
    assert dead.get_yscale() == "linear" and "diverged" in dead.texts[0].get_text()
    assert fine.get_yscale() == "log" and not fine.texts  # a normal axis is left alone
