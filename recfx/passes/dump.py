"""Write a graph module as readable text and as a picture (networkx layout, matplotlib rendering)."""

from __future__ import annotations

import logging
from pathlib import Path

import networkx as nx
from torch.fx import GraphModule

from recfx._io import atomic_path, atomic_write_text
from recfx.passes.graph_view import layers, to_networkx

_COLORS = {"placeholder": "#8fd694", "get_attr": "#d9d9d9", "output": "#f4a261", "call_function": "#a8c5e8"}
log = logging.getLogger(__name__)
# Past these a picture is no longer readable (a 6-point label per 0.6 x 1.6 inch cell; onerec-tiny's 1419 nodes,
# 118 wide and 677 deep, made 6000 x 12000 pixel PNGs): such graphs get the text dump only, and a log line.
_MAX_DRAWN_NODES = 400
_MAX_DRAWN_WIDTH = 24  # nodes in the widest topological generation
_MAX_DRAWN_DEPTH = 120  # generations


def graph_text(gm: GraphModule) -> str:
    """The graph as readable code with shapes (``print_readable``) followed by the node table."""
    return gm.print_readable(print_output=False, include_stride=False, include_device=False)


def dump_graph(gm: GraphModule, stem: str | Path, fmt: str | None = "png") -> list[Path]:
    """Write ``<stem>.txt`` and, if ``fmt`` is ``png`` or ``svg``, ``<stem>.<fmt>``; returns the paths written.

    Files are written atomically (temporary file, then rename). Graphs too large to draw readably (over 400 nodes,
    24 nodes side by side or 120 generations deep) get the text only, with a warning saying so.
    """
    if fmt not in (None, "png", "svg"):
        raise ValueError(f"dump format must be 'png', 'svg' or None, got {fmt!r}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".txt")]
    atomic_write_text(paths[0], graph_text(gm))
    if fmt is None:
        return paths
    too_large = _too_large_to_draw(gm)
    if too_large:
        log.warning("graph dump %s: %s, too large to draw readably; wrote the text dump only", paths[0], too_large)
        return paths
    path = stem.with_suffix(f".{fmt}")
    draw(gm, path)
    paths.append(path)
    return paths


def _too_large_to_draw(gm: GraphModule) -> str:
    """Why the graph is too large for a readable picture ("" when it is not)."""
    nodes = len(gm.graph.nodes)
    if nodes > _MAX_DRAWN_NODES:
        return f"{nodes} nodes (a picture is drawn up to {_MAX_DRAWN_NODES})"
    gen = layers(to_networkx(gm))
    depth = max(gen.values(), default=0) + 1
    width = max((sum(1 for v in gen.values() if v == d) for d in range(depth)), default=0)
    if width > _MAX_DRAWN_WIDTH or depth > _MAX_DRAWN_DEPTH:
        return (f"{width} nodes wide and {depth} deep (a picture is drawn up to {_MAX_DRAWN_WIDTH} wide and "
                f"{_MAX_DRAWN_DEPTH} deep)")
    return ""


def draw(gm: GraphModule, path: str | Path) -> None:
    """Render the graph top-down by topological generation (PNG or SVG by the file suffix)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    g = to_networkx(gm)
    gen = layers(g)
    nx.set_node_attributes(g, gen, "layer")
    pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal", scale=1.0)
    pos = {v: (x, -y) for v, (x, y) in pos.items()}  # generation 0 at the top
    depth = max(gen.values(), default=0) + 1
    width = max(sum(1 for v in gen.values() if v == d) for d in range(depth)) if gen else 1
    fig, ax = plt.subplots(figsize=(min(4 + 1.6 * width, 60), min(2 + 0.6 * depth, 120)))
    colors = [_COLORS.get(g.nodes[v]["op"], "#e9c46a") for v in g.nodes]
    labels = {v: f"{v}\n{g.nodes[v]['target']}" for v in g.nodes}
    nx.draw_networkx(g, pos, ax=ax, labels=labels, node_color=colors, node_size=900, font_size=6,
                     arrowsize=8, node_shape="s")
    ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip("."))
    finally:
        plt.close(fig)
