"""The book's figure style in one place: seaborn theme, a colour per model, provenance lines.

Every chapter calls ``plots.setup()`` once and draws with ``plots.MODEL_COLORS``; the names
readers see come from one table each (``label`` for models, ``task_label`` for tasks). The
provenance line under each figure is ``analysis.provenance``'s.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.patches import FancyArrowPatch

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
