"""The report's figures, drawn with matplotlib's object API onto a figure they are given.

Every function here takes a ``matplotlib.figure.Figure`` (or ``SubFigure``) and plain numbers,
and draws one figure; it never touches pyplot's global state. :func:`render_svg` turns a drawing
into SVG for the HTML report; the PDF report draws the same functions onto its pages.
Text that came from a model or a file (site and unit names) is shown literally: drawing happens
inside :func:`style`, where mathtext is off, so a ``$`` in a name is just a dollar sign. The
functions that draw names of units and sites (unit labels, graph nodes and their legend) show
them through :func:`subnet.report.names.shown`: control characters as escapes, long names
shortened (the report's content passes them shown already; showing them again changes nothing);
other labels they are given (methods, predictors) are drawn with their control characters
shown as escapes.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from subnet.report.names import label as _label
from subnet.report.names import shown as _shown
from subnet.report.names import visible as _visible

__all__ = ["accuracy_vs_cost", "class_heatmap", "class_probabilities", "hardest_examples",
           "interaction_graph", "mask_accuracy_histogram", "method_colors",
           "render_svg", "share_correct_histogram", "si", "style", "unit_importance"]

ACCENT = "#1f5fa8"
MUTED = "#9aa5b1"
POSITIVE = "#1f77b4"
NEGATIVE = "#d62728"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")

# Drawing settings: no mathtext or TeX (names are shown as written), fonts every PDF viewer and
# text extractor reads (TrueType rather than Type 3), and a quiet, readable style.
_RC = {
    "text.parse_math": False,
    "text.usetex": False,
    "axes.formatter.use_mathtext": False,
    "pdf.fonttype": 42,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "path",
    "svg.hashsalt": "subnet",
}

# Above this many units, a site's importance is drawn as a sorted line with a confidence band
# rather than one error bar per unit (which would overlap into a grey block).
MAX_ERROR_BARS = 60


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Yields with the report's matplotlib settings (mathtext off, TrueType fonts in PDFs).

    Matplotlib reads these settings when it creates text, which happens while drawing and
    saving, so create, draw and save inside one ``with style():`` block.
    """
    with matplotlib.rc_context(_RC):
        yield


def render_svg(draw: Callable[[Figure], None], size: tuple[float, float]) -> bytes:
    """Draws a figure and returns it as SVG bytes (text as paths, so it looks the same in every
    browser; images inside it, such as digits and heat maps, stay raster).

    The output is deterministic: no date, and element ids from a fixed salt.

    Args:
        draw: A function that draws onto the ``Figure`` it is given.
        size: Figure (width, height) in inches.

    Returns:
        The SVG file's bytes.
    """
    with style():
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasSVG(fig)
        draw(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def si(value: float) -> str:
    """A count with an SI prefix: 950, 12.5k, 1.2M, 3G."""
    value = float(value)
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}"
    return f"{value:.3g}"


def _percent_axis(axis, decimals: int = 0) -> None:
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.{decimals}f} %"))


def _log_axis(axis, subs: Sequence[float] = (1.0,)) -> None:
    """Log-scaled counts labelled 10k, 1M (matplotlib's default log labels are mathtext)."""
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))
    axis.set_minor_formatter(NullFormatter())


def _finite(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """One colour per method, stable for a given set of names."""
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(sorted(set(methods)))}


def mask_accuracy_histogram(fig, accuracies: Sequence[float], *, dropout_off: float,
                            dropout_on_mean: float, masked: str = "dropout on",
                            chance: float | None = None, whole: float | None = None) -> None:
    """Histogram of the accuracy of each recorded random mask.

    Args:
        fig: The figure to draw on.
        accuracies: Accuracy of each mask (fractions).
        dropout_off: Accuracy of the full network with dropout off (fraction).
        dropout_on_mean: Mean accuracy of passes with random dropout, or of the unit masks
            for a model without Dropout (fraction).
        masked: What the passes were, in words ("dropout on", "unit masks at keep q = 0.86").
        chance: Chance accuracy on the record's examples (fraction), drawn as a line if given.
        whole: The whole model's accuracy on the record's examples (fraction), drawn as a line
            if given (instead of ``dropout_off``, which is on all test examples).
    """
    values = _finite(accuracies)
    ax = fig.subplots()
    bins = int(np.clip(math.sqrt(max(len(values), 1)), 10, 60))
    ax.hist(values, bins=bins, color=MUTED, edgecolor="white", linewidth=0.4,
            label=f"random masks ({len(values):,})")
    ax.axvline(dropout_off if whole is None else whole, color="black", linestyle="--",
               linewidth=1.2, label="whole network, dropout off")
    if chance is not None:
        ax.axvline(chance, color="0.45", linestyle="-.", linewidth=1.2, label="chance")
    ax.axvline(dropout_on_mean, color=ACCENT, linestyle=":", linewidth=1.5,
               label=f"mean with {masked}")
    _percent_axis(ax.xaxis, 1)
    ax.set_xlabel("accuracy")
    ax.set_ylabel("masks")
    ax.legend(loc="upper left", frameon=False)


def _show_image(ax, image) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(MUTED)
    if image is None:
        ax.text(0.5, 0.5, "no image", ha="center", va="center", color=MUTED,
                transform=ax.transAxes)
        return
    array = np.asarray(image, dtype=float)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        ax.imshow(array, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(array, 0.0, 1.0), interpolation="nearest")


def class_probabilities(fig, examples: Sequence[Mapping], *, columns: int = 2) -> None:
    """For each example, its image and the mean class probability over masks (± std).

    Args:
        fig: The figure to draw on.
        examples: Dicts with ``index``, ``label``, ``prob_mean``, ``prob_std`` and ``image``
            (nested list or None), as in ``results['blog']['examples']``.
        columns: Examples per row.
    """
    n = len(examples)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = fig.add_gridspec(rows, 2 * columns, width_ratios=[1, 2.4] * columns)
    for i, example in enumerate(examples):
        r, c = divmod(i, columns)
        image_ax = fig.add_subplot(grid[r, 2 * c])
        _show_image(image_ax, example.get("image"))
        image_ax.set_title(f"#{example['index']}, label {example['label']}", fontsize=9.5)
        ax = fig.add_subplot(grid[r, 2 * c + 1])
        mean = np.asarray(example["prob_mean"], dtype=float)
        std = np.asarray(example["prob_std"], dtype=float)
        classes = np.arange(len(mean))
        colors = [ACCENT if k == example["label"] else MUTED for k in classes]
        ax.bar(classes, mean, yerr=std, color=colors, error_kw={"elinewidth": 0.8, "capsize": 1.5})
        ax.set_ylim(0, 1.05)
        ax.set_xticks(classes)
        _percent_axis(ax.yaxis)
        if r == rows - 1:
            ax.set_xlabel("class")
        if c == 0:
            ax.set_ylabel("mean probability")


def share_correct_histogram(fig, shares: Sequence[float], *, n_masks: int) -> None:
    """Histogram of the share of masks that classify each example correctly (log counts).

    Args:
        fig: The figure to draw on.
        shares: Per example, the fraction of masks that got it right.
        n_masks: Number of masks in the record (for the axis label).
    """
    values = _finite(shares)
    ax = fig.subplots()
    ax.hist(values, bins=np.linspace(0.0, 1.0, 26), color=ACCENT, edgecolor="white",
            linewidth=0.4)
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    _percent_axis(ax.xaxis)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the {n_masks:,} masks that classify the example correctly")
    ax.set_ylabel("examples (log scale)")


def hardest_examples(fig, examples: Sequence[Mapping], *, columns: int = 6) -> None:
    """The hardest examples' images, titled with label, share correct and usual prediction.

    Args:
        fig: The figure to draw on.
        examples: Dicts with ``index``, ``label``, ``share_correct``, ``predicted_mode`` and
            ``image`` (nested list or None), as in ``results['robustness']['hardest']``.
        columns: Images per row.
    """
    n = len(examples)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, example in zip(axes, examples, strict=False):
        _show_image(ax, example.get("image"))
        ax.set_title(f"#{example['index']} label {example['label']}\n"
                     f"{100 * example['share_correct']:.1f} % right, "
                     f"mostly {example['predicted_mode']}", fontsize=9)
    for ax in axes[n:]:
        ax.set_axis_off()


def unit_importance(fig, *, scores: Sequence[float | None], low: Sequence[float | None],
                    high: Sequence[float | None], significant: Sequence[bool],
                    metric: str) -> None:
    """A site's units sorted by score, with confidence intervals; significant units in colour.

    Up to :data:`MAX_ERROR_BARS` units, each unit is a point with an error bar (significant ones
    filled). Above that, the sorted scores are a line inside a band of their confidence
    intervals, and the significant units are marked on the line.

    Args:
        fig: The figure to draw on.
        scores: Score of each unit (None or NaN: undefined, not drawn).
        low: Lower confidence bound of each unit (None or NaN: none).
        high: Upper confidence bound of each unit (None or NaN: none).
        significant: Whether each unit's score is significant.
        metric: What the scores measure (axis label).
    """
    scores = np.array([np.nan if v is None else v for v in scores], dtype=float)
    low = np.array([np.nan if v is None else v for v in low], dtype=float)
    high = np.array([np.nan if v is None else v for v in high], dtype=float)
    significant = np.asarray(significant, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    x = np.arange(len(order))
    s, lo, hi, sig = scores[order], low[order], high[order], significant[order]
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    n_sig = int(sig.sum())
    ax = fig.subplots()
    if len(x) > MAX_ERROR_BARS:
        if has_ci.any():
            ax.fill_between(x, np.where(has_ci, lo, np.nan), np.where(has_ci, hi, np.nan),
                            color=MUTED, alpha=0.45, linewidth=0, step="mid",
                            label="confidence interval")
        ax.plot(x, s, color="black", linewidth=1.2, label="score (sorted)", zorder=2)
        ax.scatter(x[sig], s[sig], s=16, color=ACCENT, zorder=3,
                   label=f"significant ({n_sig} of {len(x)})")
    else:
        if has_ci.any():
            err = np.vstack([np.clip(s - lo, 0, None), np.clip(hi - s, 0, None)])[:, has_ci]
            ax.errorbar(x[has_ci], s[has_ci], yerr=err, fmt="none", ecolor=MUTED,
                        elinewidth=1.0, capsize=0 if len(x) > 30 else 2)
        ax.scatter(x[~sig], s[~sig], s=22, facecolor="white", edgecolor=MUTED, linewidth=1.0,
                   label=f"not significant ({len(x) - n_sig})", zorder=3)
        ax.scatter(x[sig], s[sig], s=22, color=ACCENT, label=f"significant ({n_sig})",
                   zorder=3)
    ax.axhline(0.0, color="black", linewidth=0.6)
    if len(x) <= 40:
        ax.set_xticks(x, [str(u) for u in order], rotation=90 if len(x) > 16 else 0)
        ax.set_xlabel("unit (sorted by score)")
    else:
        ax.set_xlabel("units, ranked by score")
    ax.set_xlim(-1, len(x))
    ax.set_ylabel(f"importance ({metric})")
    ax.legend(loc="upper right", frameon=False)


def class_heatmap(fig, *, classes: Sequence[int], units: Sequence[str],
                  matrix: Sequence[Sequence[float | None]], metric: str) -> None:
    """Class-conditional importance: classes (rows) by top units (columns), diverging colours.

    Args:
        fig: The figure to draw on.
        classes: The class of each row.
        units: The label of each column (e.g. ``"dense:12"``).
        matrix: Scores, one row per class (None: undefined, left blank).
        metric: What the scores measure (colour bar label).
    """
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    finite = _finite(values)
    limit = float(np.max(np.abs(finite))) if finite.size else 1.0
    limit = limit or 1.0
    ax = fig.subplots()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(np.arange(len(units)), [_label(u) for u in units], rotation=90)
    ax.set_yticks(np.arange(len(classes)), [str(c) for c in classes])
    ax.set_xlabel("unit")
    ax.set_ylabel("class")
    ax.spines[:].set_visible(False)
    fig.colorbar(image, ax=ax, label=f"importance for the class ({metric})", shrink=0.9)


def interaction_graph(fig, *, nodes: Sequence[Mapping], edges: Sequence[Mapping],
                      seed: int = 0) -> None:
    """The top units as a graph: node size by score, edges coloured by the interaction's sign.

    The layout is networkx's spring layout (seeded, so the same graph is drawn the same way);
    edges are drawn with widths proportional to |weight|, blue for synergy (positive weight)
    and red for redundancy (negative).

    Args:
        fig: The figure to draw on.
        nodes: Dicts with ``id``, ``site``, ``unit`` and ``score``.
        edges: Dicts with ``source``, ``target`` and ``weight`` (node ids).
        seed: Seeds the layout.
    """
    import networkx as nx

    graph = nx.Graph()
    for node in nodes:
        graph.add_node(node["id"])
    for edge in edges:
        graph.add_edge(edge["source"], edge["target"], strength=abs(float(edge["weight"])))
    positions = nx.spring_layout(graph, weight="strength", seed=seed) if len(graph) > 1 else {
        node["id"]: np.zeros(2) for node in nodes}
    ax = fig.subplots()
    ax.set_axis_off()
    if edges:
        weights = np.array([float(e["weight"]) for e in edges])
        top = float(np.max(np.abs(weights))) or 1.0
        segments = [(positions[e["source"]], positions[e["target"]]) for e in edges]
        ax.add_collection(LineCollection(
            segments, linewidths=0.5 + 4.5 * np.abs(weights) / top,
            colors=[POSITIVE if w > 0 else NEGATIVE for w in weights], alpha=0.6, zorder=1))
    scores = np.array([float(n["score"]) for n in nodes])
    span = float(np.ptp(scores)) if len(scores) else 0.0
    sizes = 120 + 780 * ((scores - scores.min()) / span if span > 0 else np.ones_like(scores))
    site_colors = method_colors([n["site"] for n in nodes])
    xy = np.array([positions[n["id"]] for n in nodes]).reshape(-1, 2)
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=[site_colors[n["site"]] for n in nodes],
               edgecolor="white", linewidth=0.8, zorder=2)
    for (x, y), node in zip(xy, nodes, strict=True):
        ax.annotate(_label(node["id"]), (x, y), xytext=(0, 9), textcoords="offset points",
                    ha="center", fontsize=9, zorder=3)
    ax.margins(0.12)
    handles = [Line2D([], [], marker="o", linestyle="", color=color,
                      label=f"site {_shown(site)}")
               for site, color in site_colors.items()]
    handles += [Line2D([], [], color=POSITIVE, linewidth=2, label="synergy (weight > 0)"),
                Line2D([], [], color=NEGATIVE, linewidth=2, label="redundancy (weight < 0)")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def accuracy_vs_cost(fig, summary: Sequence[Mapping], *, cost: str, dense_accuracy: float,
                     dense_cost: float, tolerance: float | None = None,
                     names: Mapping[str, str] | None = None) -> None:
    """Accuracy against FLOPs or parameters (log x) for every method, ± std over seeds.

    Two panels share the x axis: every point (left) and the band near the dense accuracy
    (right), where methods that come close are told apart. One-shot accuracy is dashed,
    fine-tuned accuracy solid; the dense model is a horizontal line (and a dotted one at the
    dense accuracy minus the tolerance).

    Args:
        fig: The figure to draw on.
        summary: Dicts as in ``results['comparison']['summary']``.
        cost: ``"flops"`` or ``"params"``: the x axis.
        dense_accuracy: The whole model's accuracy the subnetworks are held to (fraction): the
            answer's bar, with dropout off or on, whichever is higher.
        dense_cost: The dense model's FLOPs or parameters.
        tolerance: Accuracy tolerance (fraction), or None to draw no tolerance line.
        names: The display name of each method key in the legend (a key not in it is shown
            as it is); the report passes :data:`subnet.report.content.METHOD_NAMES`.
    """
    names = names or {}
    overview, zoom = fig.subplots(1, 2, sharex=True)
    colors = method_colors([row["method"] for row in summary])
    highest = dense_accuracy
    for ax in (overview, zoom):
        for method, color in colors.items():
            rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r[cost])
            for key, linestyle, marker in (("oneshot", "--", "o"), ("finetuned", "-", "s")):
                points = [(r[cost], r[f"accuracy_{key}_mean"], r.get(f"accuracy_{key}_std") or 0.0)
                          for r in rows if r.get(f"accuracy_{key}_mean") is not None]
                if not points:
                    continue
                px, py, pe = (np.array(v, dtype=float) for v in zip(*points, strict=True))
                highest = max(highest, float(np.nanmax(py + pe)))
                ax.errorbar(px, py, yerr=pe, color=color, linestyle=linestyle, marker=marker,
                            markersize=3.5, linewidth=1.2, capsize=2, elinewidth=0.8)
        ax.axhline(dense_accuracy, color="black", linewidth=1.0)
        if tolerance is not None:
            ax.axhline(dense_accuracy - tolerance, color="black", linewidth=0.8, linestyle=":")
        ax.axvline(dense_cost, color="black", linewidth=0.6, alpha=0.3)
        ax.set_xscale("log")
        _log_axis(ax.xaxis, subs=(1.0, 2.0, 5.0))
        ax.set_xlabel("FLOPs per example (log scale)" if cost == "flops"
                      else "parameters (nonzero for tfmot; log scale)")
    band = max(10 * (tolerance or 0.0), 0.01)
    zoom.set_ylim(dense_accuracy - band, min(1.0, max(highest, dense_accuracy) + band / 10))
    overview.set_title("all methods and budgets")
    zoom.set_title(f"within {100 * band:.1f} points of the dense accuracy")
    _percent_axis(overview.yaxis, 1)
    _percent_axis(zoom.yaxis, 2)
    overview.set_ylabel("test accuracy")
    handles = [Line2D([], [], color=color, linewidth=2,
                      label=_visible(names.get(method, method)))
               for method, color in colors.items()]
    handles += [Line2D([], [], color="black", linestyle="--", marker="o", markersize=3.5,
                       label="one-shot"),
                Line2D([], [], color="black", linestyle="-", marker="s", markersize=3.5,
                       label="fine-tuned"),
                Line2D([], [], color="black", linewidth=1.0, label="dense model")]
    if tolerance is not None:
        handles.append(Line2D([], [], color="black", linestyle=":", label="dense − tolerance"))
    zoom.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def reliability_diagram(fig, reliabilities: Mapping[str, Mapping]) -> None:
    """Accuracy against confidence per bin, one line per predictor, and the diagonal.

    Args:
        fig: The figure to draw on.
        reliabilities: {label: a reliability dict of :func:`subnet.uncertainty` (``edges``,
            ``count``, ``confidence``, ``accuracy``; None for an empty bin)}.
    """
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=0.8, label="calibrated")
    colors = [ACCENT, MUTED, "#2a9d8f", "#e9c46a"]
    for (label, data), color in zip(reliabilities.items(), colors, strict=False):
        points = [(c, a) for c, a in zip(data["confidence"], data["accuracy"], strict=True)
                  if c is not None and a is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, color=color,
                    label=_visible(label))
    _percent_axis(ax.xaxis)
    _percent_axis(ax.yaxis)
    ax.set_xlabel("confidence (largest averaged probability)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="best", frameon=False, fontsize=8)


def entropy_histograms(fig, edges: Sequence[float], panels: Mapping[str, Mapping]) -> None:
    """Histograms of the predictive entropy: right, wrong and out-of-distribution examples,
    one panel per predictor, each group as a fraction of its examples.

    Args:
        fig: The figure to draw on.
        edges: Bin edges (nats).
        panels: {predictor label: {"right": counts, "wrong": counts, "ood": counts or None}}.
    """
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    edges = np.asarray(edges, float)
    for ax, (label, groups) in zip(axes, panels.items(), strict=True):
        for name, color in (("right", MUTED), ("wrong", ACCENT), ("ood", "#2a9d8f")):
            counts = groups.get(name)
            if not counts or not np.sum(counts):
                continue
            share = np.asarray(counts, float) / np.sum(counts)
            ax.stairs(share, edges, color=color, linewidth=1.4,
                      label={"right": "right", "wrong": "wrong",
                             "ood": "out of distribution"}[name])
        ax.set_title(_visible(label), fontsize=9)
        ax.set_xlabel("predictive entropy (nats)")
    _percent_axis(axes[0].yaxis)
    axes[0].set_ylabel("share of the group")
    axes[0].legend(loc="upper right", frameon=False)
