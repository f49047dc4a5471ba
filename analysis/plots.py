"""The book's figure style in one place: seaborn theme, a colour per model, provenance lines.

Every chapter calls ``plots.setup()`` once and draws with ``plots.MODEL_COLORS``; the names
readers see come from one table each (``label`` for models, ``task_label`` for tasks). The
provenance line under each figure is ``analysis.provenance``'s. The authors' SSM-Interpret
plane (``interpret_plane``, ``interpret_planes``) is drawn here too.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import FancyArrowPatch, Rectangle

from .interpret import ssm_interpret

MODEL_COLORS = {
    "codessm": "#1b9e77",
    "codessm-hf": "#66a61e",
    "codessm-8kernel": "#e6ab02",
    "rocoder": "#d95f02",
    "bimamba": "#7570b3",
    "random": "#999999",
}
MODEL_LABELS = {
    "codessm": "CodeSSM", "codessm-hf": "CodeSSM-HF", "codessm-8kernel": "CodeSSM-8kernel",
    "rocoder": "RoCoder", "bimamba": "BiMamba",
}
TASK_LABELS = {
    "search": "NL code search", "long_search": "long-context retrieval", "types": "type inference",
    "distance": "AST distance", "siblings": "AST siblings", "dfg": "data flow",
}
FIGSIZE = (7.0, 3.6)
WIDE = (10.0, 3.6)
NARROW = (5.5, 3.4)


def setup() -> None:
    """Apply the book's theme (call once per chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind",
                  rc={"figure.figsize": FIGSIZE, "figure.dpi": 110, "savefig.dpi": 110,
                      "axes.titlesize": "medium", "legend.frameon": False})


def color(model: str) -> str:
    """The model's colour; random-init baselines (``name:random``) are drawn in grey."""
    base = model.split(":")[0]
    return MODEL_COLORS["random"] if model.endswith(":random") else MODEL_COLORS.get(base, "#333333")


def label(model: str) -> str:
    base = model.split(":")[0]
    text = MODEL_LABELS.get(base, base)
    return text + " (random init)" if model.endswith(":random") else text


def task_label(task: str) -> str:
    """The reader's name of a fine-tuning or probing task."""
    return TASK_LABELS.get(task, task)


def finish(fig=None) -> None:
    """Tight layout and show (the inline backend captures the figure)."""
    fig = fig or plt.gcf()
    fig.tight_layout()
    plt.show()


def draw_ast(parsed, ax=None, edges=True, max_label: int = 12):
    """Draw a parsed function's syntax tree (leaves = code tokens, left to right) with its
    data-flow edges as arcs under the leaves (comesFrom blue, computedFrom orange)."""

    ax = ax or plt.gca()
    n_nodes = len(parsed._node_parent)
    leaf_of = {node: k for k, node in enumerate(parsed._token_node)}
    children = [[] for _ in range(n_nodes)]
    for node, parent in enumerate(parsed._node_parent):
        if parent >= 0:
            children[parent].append(node)
    x = [None] * n_nodes
    for node in reversed(range(n_nodes)):  # children have larger ids than their parent
        if node in leaf_of:
            x[node] = float(leaf_of[node])
        else:
            xs = [x[c] for c in children[node] if x[c] is not None]
            x[node] = sum(xs) / len(xs) if xs else None
    depth = parsed._node_depth
    max_depth = max(depth[n] for n in range(n_nodes) if x[n] is not None)
    for node, parent in enumerate(parsed._node_parent):
        if parent >= 0 and x[node] is not None and x[parent] is not None:
            ax.plot([x[parent], x[node]], [-depth[parent], -depth[node]], color="#bbbbbb", lw=0.8, zorder=1)
    for node in range(n_nodes):
        if x[node] is None or node in leaf_of:
            continue
        ax.text(x[node], -depth[node], parsed.node_types[node][:max_label], ha="center", va="center",
                fontsize=6, color="#555555", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="#dddddd", lw=0.5))
    for k, tok in enumerate(parsed.tokens):
        node = parsed._token_node[k]
        ax.plot([x[node], x[node]], [-depth[node], -max_depth - 1], color="#eeeeee", lw=0.6, zorder=0)
        ax.text(x[node], -max_depth - 1.3, tok.text[:max_label], ha="center", va="top", rotation=90,
                fontsize=7, family="monospace")
    if edges:
        for i, j, kind in parsed.dfg_edges:
            color = "#1f78b4" if kind == "comesFrom" else "#ff7f00"
            ax.add_patch(FancyArrowPatch((j, -max_depth - 4.2), (i, -max_depth - 4.2), connectionstyle="arc3,rad=0.35",
                                         arrowstyle="-|>", mutation_scale=7, color=color, lw=0.9))
        ax.plot([], [], color="#1f78b4", label="comesFrom")
        ax.plot([], [], color="#ff7f00", label="computedFrom")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xlim(-1, len(parsed.tokens))
    ax.set_ylim(-max_depth - 4.2 - 0.2 * len(parsed.tokens) / 2, 0.8)
    ax.set_axis_off()
    return ax


# ----------------------------------------------------------------- probing (chapters 03 and 04)

PAPER_STYLE = {"paper": dict(ls="--", marker="s", ms=4, alpha=0.75), "this build": dict(ls="-", marker="o", ms=4)}
FINETUNE_STYLE = {"types": "-", "long_search": "--", "search": ":"}


def probe_layers(wide: pd.DataFrame, metric: str, names, tasks: dict, ylabel: str, chance=None) -> None:
    """One panel per probing task (``tasks``: task -> title): ``wide[metric]`` per layer for each
    model of ``names``, pretrained solid, random-init dashed; ``chance(task)``, if given, dotted.
    wide: one row per model, checkpoint, task and layer."""
    fig, axes = plt.subplots(1, len(tasks), figsize=WIDE)
    for ax, (task, title) in zip(np.atleast_1d(axes), tasks.items()):
        for name in names:
            for ckpt, ls in (("pretrained", "-"), ("random", "--")):
                part = wide[(wide.model == name) & (wide.checkpoint == ckpt) & (wide.task == task)]
                ax.plot(part.layer, part[metric], ls, marker="o", ms=3, color=color(name), label=f"{label(name)} ({ckpt})")
        if chance is not None:
            ax.axhline(chance(task), ls=":", color="k", lw=1)
        ax.set(title=title, xlabel="layer", xticks=sorted(wide.layer.unique()))
    np.atleast_1d(axes)[0].set_ylabel(ylabel)
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="best")
    finish(fig)


def sample_size_sweep(sweep: pd.DataFrame, model: str) -> None:
    """DirectProbe against its number of training points (``sweep``: points, clusters, labels,
    accuracy, seconds): clusters with the number of labels dashed; accuracy, and seconds dotted."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=FIGSIZE)
    a1.plot(sweep.points, sweep.clusters, "o-", color=color(model))
    a1.axhline(sweep.labels.iloc[0], color="0.5", ls="--", lw=0.8)
    a1.set(xlabel="DirectProbe training points", ylabel="clusters")
    a2.plot(sweep.points, sweep.accuracy, "o-", color=color(model))
    a2.set(xlabel="DirectProbe training points", ylabel="test accuracy")
    a3 = a2.twinx()
    a3.plot(sweep.points, sweep.seconds, "s:", color="0.4")
    a3.set_ylabel("seconds", color="0.4")
    finish(fig)


def probing_curves(paper: pd.DataFrame, rerun: pd.DataFrame, n_layers: int, paper_layers: int = 12,
                   models=("codessm", "rocoder")) -> pd.DataFrame:
    """The paper's per-layer probing values beside the re-run's, at relative depth
    depth = layer / (number of layers): rows source ("paper" | "this build"), model, task, layer,
    depth, value, metric. paper: ``claims.paper_points`` rows (pretrained kept); rerun: rows
    model, checkpoint, task, layer, value, metric (pretrained kept, layers >= 1)."""
    for name, df in (("paper", paper), ("rerun", rerun)):
        missing = {"model", "checkpoint", "task", "layer", "value", "metric"} - set(df.columns)
        if missing:
            raise ValueError(f"{name} lacks columns {sorted(missing)}")
    keep = lambda df: df[(df.checkpoint == "pretrained") & df.model.isin(list(models)) & (df.layer >= 1)]
    out = [keep(paper).assign(source="paper", depth=lambda d: d.layer / paper_layers),
           keep(rerun).assign(source="this build", depth=lambda d: d.layer / n_layers)]
    return pd.concat(out, ignore_index=True)[["source", "model", "task", "layer", "depth", "value", "metric"]]


def forgetting_curves(paper: pd.DataFrame, rerun: pd.DataFrame, n_layers: int, paper_layers: int = 12,
                      tasks=("types", "long_search"), models=("codessm", "rocoder")) -> pd.DataFrame:
    """Change of probing accuracy after - before fine-tuning, per model, fine-tuning task,
    probing task and layer, the paper's beside the re-run's at relative depth: rows source,
    model, task (fine-tuning), probe_task, layer, depth, change. paper: ``claims.paper_points`` of
    every checkpoint ("finetuned:<task>" rows minus the same cell's "pretrained"; cells without
    both are left out); rerun: ``probing.forgetting`` rows of one probe and metric (model, task,
    probe_task, layer, change)."""
    before = paper[paper.checkpoint == "pretrained"].set_index(["model", "task", "layer"]).value
    after = paper[paper.checkpoint.isin([f"finetuned:{t}" for t in tasks])]
    change = after.value.to_numpy() - before.reindex(pd.MultiIndex.from_frame(after[["model", "task", "layer"]])).to_numpy()
    ours = pd.DataFrame({"source": "paper", "model": after.model.to_numpy(),
                         "task": after.checkpoint.str.split(":").str[1].to_numpy(), "probe_task": after.task.to_numpy(),
                         "layer": after.layer.to_numpy(), "depth": after.layer.to_numpy() / paper_layers, "change": change})
    rerun = rerun[rerun.task.isin(list(tasks)) & (rerun.layer >= 1)]
    built = rerun.assign(source="this build", depth=rerun.layer / n_layers)
    out = pd.concat([ours.dropna(subset=["change"]), built[list(ours.columns)]], ignore_index=True)
    return out[out.model.isin(list(models))].reset_index(drop=True)


def paper_beside_rerun(curves: pd.DataFrame, tasks: dict, ylabel: str) -> None:
    """Per probing task (``tasks``: task -> title) the paper's curves (dashed, squares) beside
    this build's (solid, circles) against relative depth, a colour per model (``probing_curves``)."""
    fig, axes = plt.subplots(1, len(tasks), figsize=WIDE)
    for ax, (task, title) in zip(np.atleast_1d(axes), tasks.items()):
        for (source, model), g in curves[curves.task == task].groupby(["source", "model"], sort=False):
            ax.plot(g.depth, g.value, color=color(model), label=f"{label(model)} ({source})", **PAPER_STYLE[source])
        ax.set(title=title, xlabel="relative depth (layer / layers)", xlim=(0, 1.02))
    np.atleast_1d(axes)[0].set_ylabel(ylabel)
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="best")
    finish(fig)


def forgetting_beside(curves: pd.DataFrame, probe_tasks: dict) -> None:
    """Change after - before fine-tuning against relative depth (``forgetting_curves``): the
    paper's in the top row, this build's below, a column per probing task, a colour per model and
    a line style per fine-tuning task, with the zero line."""
    sources = ["paper", "this build"]
    fig, axes = plt.subplots(2, len(probe_tasks), figsize=(WIDE[0], 5.6), sharex=True, squeeze=False)
    for r, source in enumerate(sources):
        for c, (probe, title) in enumerate(probe_tasks.items()):
            ax = axes[r, c]
            part = curves[(curves.source == source) & (curves.probe_task == probe)]
            for (model, task), g in part.groupby(["model", "task"], sort=False):
                ax.plot(g.depth, g.change, FINETUNE_STYLE.get(task, "-"), marker=PAPER_STYLE[source]["marker"], ms=3,
                        color=color(model), label=f"{label(model)}, {task_label(task)}")
            ax.axhline(0, color="k", lw=0.8)
            ax.set(title=f"{title} ({source})", xlim=(0, 1.02))
        axes[r, 0].set_ylabel("after − before")
    for ax in axes[-1]:
        ax.set_xlabel("relative depth (layer / layers)")
    axes[0, -1].legend(fontsize=6, loc="best")
    finish(fig)


def forgetting_heatmaps(acc: pd.DataFrame, names, tasks, probe_tasks: dict) -> None:
    """Change after - before fine-tuning (``acc``: model, task, probe_task, layer, change), one
    heatmap per model: fine-tuning tasks as rows, probing task and layer as columns."""
    lim = max(0.05, float(acc.change.abs().max()))
    fig, axes = plt.subplots(len(names), 1, figsize=(WIDE[0], 1.6 * len(names) + 0.6), sharex=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        grid = acc[acc.model == name].pivot_table(index="task", columns=["probe_task", "layer"], values="change")
        grid = grid.reindex(index=list(tasks))
        sns.heatmap(grid, ax=ax, cmap="RdBu", vmin=-lim, vmax=lim, annot=True, fmt=".2f", annot_kws={"size": 6},
                    cbar=False, xticklabels=[f"{probe_tasks[p][:8]} {l}" for p, l in grid.columns],
                    yticklabels=[task_label(t) for t in grid.index])
        ax.set(title=label(name), xlabel="", ylabel="")
    finish(fig)


def finetune_scores(main: pd.DataFrame, names, tasks, bm25: dict, metric: dict) -> None:
    """Main test score per task (``main``: model, init, task, value per seed): bars of the mean
    over seeds, pretrained solid and random init hatched, a tick per seed, BM25 dashed."""
    fig, axes = plt.subplots(1, len(tasks), figsize=WIDE)
    for ax, task in zip(np.atleast_1d(axes), tasks):
        part = main[main.task == task]
        for k, name in enumerate(names):
            for j, init in enumerate(("pretrained", "random")):
                vals = part[(part.model == name) & (part.init == init)].value
                x = k + (j - 0.5) * 0.38
                ax.bar(x, vals.mean(), 0.36, color=color(name), alpha=1 if init == "pretrained" else 0.45,
                       hatch=None if init == "pretrained" else "//", edgecolor="white")
                ax.scatter([x] * len(vals), vals, marker="_", color="k", s=80, zorder=3)
        if task in bm25:
            ax.axhline(bm25[task], color="k", ls="--", lw=1, label="BM25")
            ax.legend(loc="upper right", fontsize=7)
        ax.set_xticks(range(len(names)), [label(n) for n in names])
        ax.set(title=task_label(task), ylabel=metric[task])
    finish(fig)


def gap_words(row, name: str) -> str:
    """'won', 'even' or 'lost' by the paired 95% interval ``row[name + ' low'/' high']`` of
    pretrained minus random init, with the interval."""
    low, high = row[name + " low"], row[name + " high"]
    if pd.isna(low):
        return "not run in this row"
    word = "won" if low > 0 else "lost" if high < 0 else "even (interval spans 0)"
    return f"{word}, gap interval [{low:+.3f}, {high:+.3f}]"


def c1_per_task(verdict, tasks: dict) -> pd.DataFrame:
    """C1's verdict per task as a table (from ``verdict.numbers`` / ``.intervals`` of
    ``claims.c1_probing`` or ``c1_published``): layers ahead, layers compared, mean gap and its
    95% interval (NaN for published point values); rows in ``tasks`` order (task -> title)."""
    rows = []
    for task, title in tasks.items():
        if f"layers compared, {task}" not in verdict.numbers:
            continue
        low, high = verdict.intervals.get(f"mean gap {task}", (np.nan, np.nan))
        rows.append({"task": title, "layers ahead": int(verdict.numbers[f"layers ahead, {task}"]),
                     "layers compared": int(verdict.numbers[f"layers compared, {task}"]),
                     "mean gap": verdict.numbers[f"mean gap {task}"], "low": low, "high": high})
    return pd.DataFrame(rows, columns=["task", "layers ahead", "layers compared", "mean gap", "low", "high"])


# ----------------------------------------------------------------------------- SSM-Interpret (chapter 05)

CLASS_COLORS = {"low-pass": "#e6ab02", "band-pass": "#1b9e77", "high-pass": "#386cb0"}
DIRECTION_MARKERS = {"forward": "^", "backward": "o"}


def _class_regions(ax, xlim, ylim) -> None:
    """The authors' three class regions on the (centroid, log10 LHFR) plane, shaded and named:
    low-pass x < 0.166, y > 1; band-pass x >= 0.166, 0 <= y <= 1; high-pass x >= 0.166, y < 0."""
    edge, lo, hi = ssm_interpret.CENTROID_EDGE, ssm_interpret.HIGH_PASS_LOG10, ssm_interpret.LOW_PASS_LOG10
    boxes = {"low-pass": (xlim[0], edge, hi, ylim[1]), "band-pass": (edge, xlim[1], lo, hi),
             "high-pass": (edge, xlim[1], ylim[0], lo)}
    for name, (x0, x1, y0, y1) in boxes.items():          # names in corners the kernels rarely reach
        if x1 > x0 and y1 > y0:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, color=CLASS_COLORS[name], alpha=0.12, lw=0, zorder=0))
            at, ha = ((x0 + 0.004, y0 + 0.12), "left") if name == "low-pass" else ((x1 - 0.004, y0 + 0.12), "right")
            ax.text(*at, name, ha=ha, va="bottom", fontsize=8, color=CLASS_COLORS[name], weight="bold", zorder=1)
    ax.axvline(edge, color="0.5", ls="--", lw=0.7)
    for y in (lo, hi):
        ax.axhline(y, color="0.5", ls="--", lw=0.7)


def interpret_plane(ax, stats, before: str, afters: dict | None = None, clip=(-1.5, 5.0), title: str = "",
                    limits=None):
    """The authors' plane for one model: spectral centroid (x, cycles per token) against log10
    LHFR (y, clipped to ``clip`` for display) of the kernels of checkpoint ``before``
    (triangles forward, circles backward, each labelled with its layer), the class regions
    shaded, and an arrow to each later checkpoint's position (``afters``: name -> colour).
    stats: an ``interpret.ssm_interpret_statistics`` or ``reference.paper_spectra()`` frame;
    ``limits``: (xlim, ylim), by default ``_plane_limits`` of the kernels shown."""
    afters = afters or {}
    keys = ["layer", "direction", *(["kernel"] if "kernel" in stats else [])]
    base = stats[stats.checkpoint == before].set_index(keys)
    y = lambda s: s.log10_lhfr.clip(*clip)                              # noqa: E731
    xlim, ylim = limits or _plane_limits([stats[stats.checkpoint.isin([before, *afters])]], clip)
    _class_regions(ax, xlim, ylim)
    for name, colour in afters.items():
        after = stats[stats.checkpoint == name].set_index(keys).reindex(base.index)
        for (x0, y0), (x1, y1) in zip(zip(base.spectral_centroid, y(base)), zip(after.spectral_centroid, y(after))):
            ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color=colour, lw=0.8, alpha=0.8))
        ax.plot([], [], color=colour, lw=1, label=f"→ {name}")
    for direction, marker in DIRECTION_MARKERS.items():
        part = base[base.index.get_level_values("direction") == direction]
        ax.scatter(part.spectral_centroid, y(part), marker=marker, s=36, color="k" if direction == "forward" else "w",
                   edgecolor="k", lw=0.7, zorder=3, label=f"{before}, {direction}")
        for (layer, *_), xv, yv in zip(part.index, part.spectral_centroid, y(part)):
            ax.annotate(str(layer), (xv, yv), xytext=(3, 3), textcoords="offset points", fontsize=7, zorder=4)
    ax.set(xlim=xlim, ylim=ylim, xlabel="spectral centroid (cycles per token)", ylabel="log10 LHFR", title=title)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def interpret_planes(panels: dict, before: str, afters: dict | None = None, clip=(-1.5, 5.0)):
    """``interpret_plane`` side by side, one panel per ``panels`` entry (title -> stats frame),
    sharing the y axis; returns the figure."""
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDE[0], 4.6), sharey=True, squeeze=False)
    shown = [s[s.checkpoint.isin([before, *(afters or {})])] for s in panels.values()]
    for ax, (title, stats) in zip(axes[0], panels.items()):
        interpret_plane(ax, stats, before, afters, clip=clip, title=title, limits=_plane_limits(shown, clip))
    return fig


def _plane_limits(frames, clip) -> tuple:
    """(xlim, ylim) holding every kernel of ``frames`` and the class boundaries."""
    c = pd.concat([f.spectral_centroid for f in frames])
    r = pd.concat([f.log10_lhfr.clip(*clip) for f in frames])
    return (min(0.0, c.min() - 0.01), max(0.3, c.max() + 0.01)), (min(-1.0, r.min() - 0.3), max(4.5, r.max() + 0.3))


def selective_kernels(view, colors: dict, labels: dict, direction: int = 0, max_lag: int = 48):
    """BiMamba's kernels by lag (``interpret.SelectiveKernels``), one column per layer: the mean
    over channels of each channel's effective kernel divided by its largest magnitude (top), the
    effective kernels' power spectra (middle) and the time-invariant decay's (bottom), one line
    per stage."""
    n_layers = next(iter(view.effective.values())).shape[0]
    fig, axes = plt.subplots(3, n_layers, figsize=(WIDE[0], 6), squeeze=False)
    for layer in range(n_layers):
        for s, k in view.effective.items():
            k = k[layer, direction]
            norm = (k / k.abs().max(-1, keepdim=True).values.clamp(min=1e-30)).mean(0).numpy()
            axes[0, layer].plot(norm[:min(view.length, max_lag)], color=colors[s], lw=1, label=labels[s])
            for row, spectra in ((1, view.spectra), (2, view.lti_spectra)):
                sp = spectra[s]
                axes[row, layer].plot(sp.freqs, sp.power[layer, direction].mean(0), color=colors[s], lw=1)
        axes[0, layer].set_title(f"layer {layer + 1}", fontsize=9)
        axes[0, layer].set_xlabel("lag (tokens)")
        for row in (1, 2):
            axes[row, layer].set_yscale("log")
            axes[row, layer].set_xlabel("cycles per token")
    for row, name in enumerate(("effective kernel", "P(f), effective", "P(f), LTI decay")):
        axes[row, 0].set_ylabel(name)
    axes[0, -1].legend(fontsize=7)
    finish(fig)
    return fig


def transfer_check(freqs, fft, h_truncated, h_infinite, every: int = 64):
    """|H(f)| of the first kernel (layer 1, forward) three ways: the FFT of its first L lags
    (dots, about ``every`` of them), the closed form of the truncated kernel (line) and of the
    infinite one (dashed); log scale."""
    fig, ax = plt.subplots(figsize=NARROW)
    step = max(1, len(freqs) // every)
    ax.plot(freqs[::step], np.abs(fft[0, 0, 0])[::step], "o", ms=3, color="k", label="FFT of k[0..L-1]")
    ax.plot(freqs, np.abs(h_truncated[0, 0, 0]), color="tab:orange", label="closed form, truncated")
    ax.plot(freqs, np.abs(h_infinite[0, 0, 0]), "--", color="tab:blue", label="closed form, infinite")
    ax.set(xlabel="frequency (cycles per token)", ylabel="|H(f)|", yscale="log")
    ax.legend(fontsize=8)
    finish(fig)


def kernels_by_lag(kernels: dict, colors: dict, labels: dict, max_lag: int = 64):
    """S4D kernels in the time domain (``kernels``: stage -> [layers, 2, n_kernels, L]; the first
    kernel of each layer and direction), each divided by its largest magnitude: one column per
    layer, one row per direction, one line per stage (the pretrained one, first, drawn bolder)."""
    first = next(iter(kernels.values()))
    n_layers, show = first.shape[0], min(first.shape[-1], max_lag)
    fig, axes = plt.subplots(2, n_layers, figsize=(WIDE[0], 3.4), sharex=True, sharey=True, squeeze=False)
    for d, direction in enumerate(("forward", "backward")):
        for layer in range(n_layers):
            ax = axes[d, layer]
            for j, (s, k) in enumerate(kernels.items()):
                k = np.asarray(k[layer, d, 0, :show])
                ax.plot(k / np.abs(k).max(), color=colors[s], lw=1.2 if j == 0 else 0.9, label=labels[s])
            ax.axhline(0, color="0.8", lw=0.5)
            ax.set_title(f"layer {layer + 1}" if d == 0 else "", fontsize=9)
            ax.set(ylabel=direction if layer == 0 else "", xlabel="lag (tokens)" if d == 1 else "")
    axes[0, -1].legend(fontsize=7)
    finish(fig)


def spectral_shift(shift: pd.DataFrame, per_mode: pd.DataFrame, tasks, colors: dict, task_labels: dict,
                   titles: dict, n_layers: int):
    """Change of each statistic of ``titles`` (statistic -> panel title) per layer and task:
    bars, the whole kernels' mean change over directions (``shift``: task, layer, statistic,
    change); points with intervals, the mean change of the layer's single-mode kernels
    (``per_mode``: task, layer, statistic, change, ci_low, ci_high)."""
    fig, axes = plt.subplots(1, len(titles), figsize=WIDE, squeeze=False)
    width = 0.8 / len(tasks)
    for ax, (stat, title) in zip(axes[0], titles.items()):
        whole = shift[shift.statistic == stat].groupby(["task", "layer"]).change.mean()
        modes = per_mode[per_mode.statistic == stat].set_index(["task", "layer"])
        for j, t in enumerate(tasks):
            x = np.arange(n_layers) + (j - (len(tasks) - 1) / 2) * width
            ax.bar(x, [whole[(t, layer)] for layer in range(n_layers)], width * 0.9, color=colors[t],
                   alpha=0.55, label=task_labels[t])
            m = modes.loc[t]
            ax.errorbar(x, m.change, yerr=[m.change - m.ci_low, m.ci_high - m.change], fmt="o", ms=3,
                        color=colors[t], lw=0.8)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(n_layers), [str(layer + 1) for layer in range(n_layers)])
        ax.set(xlabel="layer")
        ax.set_title(title, fontsize=9)
    axes[0, 0].legend(fontsize=7)
    finish(fig)


def variant_centroid_changes(changes: pd.Series, variants, tasks, task_labels: dict, width: float = 0.27):
    """Bars of the centroid change per layer (``changes``: indexed by model, task, layer), one
    panel per task and one bar per variant; each variant shows the layers it has (CodeSSM-HF has
    one fewer than CodeSSM)."""
    fig, axes = plt.subplots(1, len(tasks), figsize=WIDE, sharey=True, squeeze=False)
    n_layers = 0
    for ax, t in zip(axes[0], tasks):
        for j, v in enumerate(variants):
            per_layer = changes.loc[(v, t)]
            n_layers = max(n_layers, len(per_layer))
            ax.bar(np.asarray(per_layer.index) + (j - (len(variants) - 1) / 2) * width, per_layer.values,
                   width * 0.9, color=color(v), label=label(v))
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(n_layers))
        ax.set_xlabel("layer")
        ax.set_title(task_labels[t], fontsize=9)
    axes[0, 0].set_ylabel("centroid change (cycles/token)")
    axes[0, 0].legend(fontsize=7)
    finish(fig)
    return fig
