"""Pictures of a search: the derived cells as graphs, and softmax(alpha) of every edge over the search.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, so the user's backend and
open figures are left alone) and written atomically (:func:`prdarts_timm.io.atomic_write`). Only
``recipes/search.py`` draws them; ``import prdarts_timm`` does not import matplotlib.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, Patch
from matplotlib.path import Path as MplPath
from matplotlib.ticker import MaxNLocator

from .genotypes import PRIMITIVES, Genotype
from .io import atomic_write

__all__ = ['plot_cells', 'plot_alpha_history', 'op_colors']

PathLike = Union[str, os.PathLike]

# one colour per op, shared by both pictures: pools blue, skip green, separable convs red/orange,
# dilated convs purple/brown, 'none' grey
_OP_COLORS = {
    'none': '#9e9e9e',
    'max_pool_3x3': '#1f77b4',
    'avg_pool_3x3': '#17becf',
    'skip_connect': '#2ca02c',
    'sep_conv_3x3': '#d62728',
    'sep_conv_5x5': '#ff7f0e',
    'dil_conv_3x3': '#9467bd',
    'dil_conv_5x5': '#8c564b',
}
_SPARE_COLORS = ('#e377c2', '#bcbd22', '#393b79', '#637939', '#8c6d31', '#843c39', '#7b4173', '#3182bd')
_PHASE_COLORS = ('#fff3d6', '#e3f0ff', '#e6f5e1', '#f6e3f3', '#eeeeee', '#fde2e0')

_NODE_R = 0.42       # node radius, data units
_DX = 3.2            # horizontal distance between ranks, data units
_DY = 1.7            # least vertical distance between nodes of one rank, data units
_SCALE = 0.62        # inches per data unit in the cell picture
_DPI = 110
_LABEL_PT = 8.5      # edge label font size, points


def op_colors(primitives: Sequence[str] = PRIMITIVES) -> Dict[str, str]:
    """The colour of each op: fixed for the DARTS ops, spare colours for any others."""
    spare = iter(_SPARE_COLORS * (len(primitives) // len(_SPARE_COLORS) + 1))
    return {p: _OP_COLORS[p] if p in _OP_COLORS else next(spare) for p in primitives}


def _write_png(fig: Figure, path: PathLike, dpi: int = _DPI) -> None:
    """Render ``fig`` as a PNG at ``path``, atomically."""
    FigureCanvasAgg(fig)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=dpi, facecolor='white'))
    finally:
        fig.clear()


# ---------------------------------------------------------------------------------------------- cells

def _input_name(i: int) -> str:
    return {0: '$c_{k-2}$', 1: '$c_{k-1}$'}.get(i, str(i - 2))


def _layout(edges: Sequence[Tuple[str, int]], concat: Sequence[int]) -> Dict[object, np.ndarray]:
    """Node positions: a layered (left to right) layout, rank = longest path from the cell inputs.

    Within a rank nodes sit near the mean height of their inputs, at least ``_DY`` apart; a rank that
    many edges enter is placed further right, so the fan of edges into it has room for labels.
    """
    steps = len(edges) // 2
    srcs = {j + 2: (edges[2 * j][1], edges[2 * j + 1][1]) for j in range(steps)}
    rank = {0: 0, 1: 0}
    for n in range(2, steps + 2):
        rank[n] = 1 + max(rank[s] for s in srcs[n])
    top = max(rank.values())
    inputs_span = max(1.0, sum(rank[n] == 1 for n in srcs) - 1) * _DY
    y = {0: inputs_span / 2, 1: -inputs_span / 2}
    x = {0: 0.0}
    for r in range(1, top + 1):
        nodes = [n for n in srcs if rank[n] == r]
        for n in nodes:
            y[n] = float(np.mean([y[s] for s in srcs[n]]))  # barycentre of its inputs
        nodes.sort(key=lambda n: (-y[n], n))  # top to bottom
        ys = [y[n] for n in nodes]
        for k in range(1, len(ys)):
            ys[k] = min(ys[k], ys[k - 1] - _DY)
        shift = np.mean([y[n] for n in nodes]) - np.mean(ys)
        for n, v in zip(nodes, ys):
            y[n] = v + shift
        fan = 2 * len(nodes)  # edges entering this rank
        x[r] = x[r - 1] + _DX * (1 + 0.12 * max(0, fan - 2))
    pos: Dict[object, np.ndarray] = {n: np.array([x[rank[n]], y[n]]) for n in rank}
    pos['out'] = np.array([x[top] + _DX, float(np.mean([y[c] for c in concat]))])
    return pos


def _bezier(p0: np.ndarray, p2: np.ndarray, rad: float, n: int = 48) -> np.ndarray:
    """Points of a quadratic curve from p0 to p2 bowing sideways by ``rad`` times its length."""
    d = p2 - p0
    c = (p0 + p2) / 2 + rad * np.array([-d[1], d[0]])
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t ** 2 * p2


def _route(p0: np.ndarray, p2: np.ndarray, others: List[np.ndarray], drawn: List[np.ndarray],
           taken: List[float]) -> np.ndarray:
    """The least-bent curve from p0 to p2 that keeps clear of other nodes and of curves already drawn."""
    best, best_cost = None, math.inf
    for rad in (0.0, 0.1, -0.1, 0.18, -0.18, 0.26, -0.26, 0.36, -0.36, 0.48, -0.48):
        if any(abs(rad - t) < 0.15 for t in taken):  # parallel edges between the same two nodes
            continue
        pts = _bezier(p0, p2, rad)
        gap = min((np.linalg.norm(pts - o, axis=1).min() for o in others), default=math.inf)
        cost = max(0.0, 1.9 * _NODE_R - gap) * 20 + abs(rad) * 1.5
        # points running close to an earlier curve, away from the shared end nodes
        mid = pts[(np.linalg.norm(pts - p0, axis=1) > 1.2) & (np.linalg.norm(pts - p2, axis=1) > 1.2)]
        for other in drawn:
            if len(mid):
                d = np.linalg.norm(mid[:, None, :] - other[None, :, :], axis=2).min(axis=1)
                cost += float(np.clip(0.35 - d, 0, None).sum()) * 2
        if cost < best_cost:
            best, best_cost = (rad, pts), cost
    taken.append(best[0])
    return best[1]


def _clip(pts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The part of a polyline outside the circles of its end nodes."""
    keep = (np.linalg.norm(pts - a, axis=1) > _NODE_R + 0.02) & (np.linalg.norm(pts - b, axis=1) > _NODE_R + 0.06)
    return pts[keep] if keep.sum() >= 2 else pts[[0, -1]]


def _arrow(ax, pts: np.ndarray, color: str, dashed: bool = False, lw: float = 1.8) -> None:
    path = MplPath(pts, [MplPath.MOVETO] + [MplPath.LINETO] * (len(pts) - 1))
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle='-|>', mutation_scale=13, color=color, lw=lw,
                                 linestyle='--' if dashed else '-', zorder=2, joinstyle='miter'))


def _box(center: np.ndarray, text: str) -> Tuple[float, float, float, float]:
    """Approximate extent (x0, y0, x1, y1) in data units of a horizontal label."""
    w = (len(text) * 0.56 * _LABEL_PT / 72 + 0.1) / _SCALE
    h = (_LABEL_PT * 1.5 / 72) / _SCALE
    return center[0] - w / 2, center[1] - h / 2, center[0] + w / 2, center[1] + h / 2


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _plan_cell(edges: Sequence[Tuple[str, int]], concat: Sequence[int]) -> Dict[str, object]:
    """Where everything of one cell goes: node positions, edge curves, label positions, data limits."""
    pos = _layout(edges, concat)
    node_boxes = [(p[0] - _NODE_R, p[1] - _NODE_R, p[0] + _NODE_R, p[1] + _NODE_R) for p in pos.values()]
    # (src, dst, op or None for a concat edge); short edges are routed first, long ones bend around them
    links = [(src, i // 2 + 2, op) for i, (op, src) in enumerate(edges)] + [(c, 'out', None) for c in concat]
    order = sorted(range(len(links)), key=lambda k: np.linalg.norm(pos[links[k][0]] - pos[links[k][1]]))
    curves: Dict[int, np.ndarray] = {}
    taken: Dict[Tuple[object, object], List[float]] = {}
    for k in order:
        src, dst, _ = links[k]
        others = [p for n, p in pos.items() if n not in (src, dst)]
        pts = _route(pos[src], pos[dst], others, list(curves.values()), taken.setdefault((src, dst), []))
        curves[k] = _clip(pts, pos[src], pos[dst])
    # labels: greedily at the point along each edge that covers the fewest labels, nodes and lines
    placed: List[Tuple[float, float, float, float]] = []
    labels: List[Tuple[str, np.ndarray]] = []
    all_pts = np.concatenate(list(curves.values()))
    for k, (_, _, op) in enumerate(links):
        if op is None:
            continue
        pts = curves[k]
        own = np.zeros(len(all_pts), dtype=bool)
        start = sum(len(curves[m]) for m in range(k))
        own[start:start + len(pts)] = True
        foreign = all_pts[~own]
        best, best_cost = None, math.inf
        for t in (0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.2, 0.8):
            center = pts[int(round(t * (len(pts) - 1)))]
            box = _box(center, op)
            cost = sum(_overlap(box, b) for b in placed) * 8 + sum(_overlap(box, b) for b in node_boxes) * 4
            inside = ((foreign[:, 0] > box[0]) & (foreign[:, 0] < box[2])
                      & (foreign[:, 1] > box[1]) & (foreign[:, 1] < box[3]))
            cost += inside.sum() * 0.02 + abs(t - 0.5) * 0.1
            if cost < best_cost:
                best, best_cost = (center, box), cost
        center, box = best
        placed.append(box)
        labels.append((op, center))
    return dict(pos=pos, links=links, curves=curves, labels=labels,
                extent=_extent(pos, curves.values(), placed), steps=len(edges) // 2)


def _draw_cell(ax, plan: Mapping[str, object], title: str, colors: Mapping[str, str]) -> None:
    pos, curves = plan['pos'], plan['curves']
    for k, (_, _, op) in enumerate(plan['links']):
        if op is None:
            _arrow(ax, curves[k], '#808080', dashed=True, lw=1.3)
        else:
            _arrow(ax, curves[k], colors[op])
    for op, center in plan['labels']:
        ax.text(center[0], center[1], op, color=colors[op], fontsize=_LABEL_PT, ha='center', va='center',
                zorder=4, bbox=dict(boxstyle='round,pad=0.18', fc='white', ec=colors[op], lw=0.8, alpha=0.92))
    # nodes on top of the edges
    for n, p in pos.items():
        if n == 'out':
            fc, text = '#fff2a8', '$c_{k}$'
        elif n in (0, 1):
            fc, text = '#c9ecc4', _input_name(n)
        else:
            fc, text = '#cfe0f7', _input_name(n)
        ax.add_patch(Circle(p, _NODE_R, fc=fc, ec='#333333', lw=1.2, zorder=5))
        ax.text(p[0], p[1], text, ha='center', va='center', fontsize=11, zorder=6)
    x0, y0, x1, y1 = plan['extent']
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect('equal')
    ax.set_anchor('W')
    ax.axis('off')
    n = plan['steps']
    ax.set_title(f"{title} ({n} node{'s' if n != 1 else ''})", fontsize=12, loc='left')


def _extent(pos, curves, boxes) -> Tuple[float, float, float, float]:
    """Data limits holding every node, curve and label, with a margin."""
    pts = np.concatenate([np.array(list(pos.values()))] + list(curves))
    pad = _NODE_R + 0.2
    x0, y0 = pts.min(axis=0) - pad
    x1, y1 = pts.max(axis=0) + pad
    for b in boxes:
        x0, y0, x1, y1 = min(x0, b[0] - 0.1), min(y0, b[1] - 0.1), max(x1, b[2] + 0.1), max(y1, b[3] + 0.1)
    return x0, y0, x1, y1


def plot_cells(genotype: Genotype, path: PathLike) -> None:
    """Draw the normal and the reduction cell of ``genotype`` as graphs into one PNG at ``path``.

    Cell inputs c_{k-2}, c_{k-1} sit on the left, intermediate nodes in the middle (left to right by
    depth), the output c_{k} on the right. Each edge is an arrow labelled with its op (one colour per op);
    dashed arrows feed the concatenated nodes into the output.
    """
    colors = op_colors(PRIMITIVES)
    cells = [('normal cell', genotype.normal, genotype.normal_concat),
             ('reduction cell', genotype.reduce, genotype.reduce_concat)]
    # size each panel from its layout so a data unit is the same size on paper in both
    plans = [_plan_cell(edges, concat) for _, edges, concat in cells]
    extents = [(p['extent'][2] - p['extent'][0], p['extent'][3] - p['extent'][1]) for p in plans]
    width = max(e[0] for e in extents) * _SCALE
    heights = [e[1] * _SCALE for e in extents]
    legend_h = 0.5
    title_h = 0.55 if genotype.name else 0.35  # room for the first panel's own title
    fig = Figure(figsize=(max(width, 6.0), sum(heights) + legend_h + title_h + 0.6))
    gs = fig.add_gridspec(2, 1, height_ratios=heights, hspace=0.15,
                          top=1 - title_h / fig.get_figheight(),
                          bottom=(legend_h + 0.15) / fig.get_figheight(), left=0.02, right=0.98)
    for k, ((title, _, _), plan) in enumerate(zip(cells, plans)):
        _draw_cell(fig.add_subplot(gs[k]), plan, title, colors)
    used = [op for op in PRIMITIVES if any(op == e[0] for e in genotype.normal + genotype.reduce)]
    handles = [Line2D([], [], color=colors[op], lw=2.5, label=op) for op in used]
    handles.append(Line2D([], [], color='#777777', lw=1.3, ls='--', label='concat to output'))
    fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 4), fontsize=9, frameon=False)
    if genotype.name:
        fig.suptitle(genotype.name, fontsize=14, fontweight='bold', y=1 - 0.12 / fig.get_figheight(), va='top')
    _write_png(fig, path)


# -------------------------------------------------------------------------------------- alpha history

def _steps_for(n_edges: int) -> int:
    """Number of intermediate nodes of a cell with ``n_edges`` mixed edges (2 + 3 + ... per node)."""
    steps, total = 0, 0
    while total < n_edges:
        total += 2 + steps
        steps += 1
    if total != n_edges:
        raise ValueError(f'{n_edges} edges is not a cell: node j has 2 + j edges, so a cell has 2, 5, 9, 14, '
                         '20, ... edges')
    return steps


def _check_history(history: Sequence[Mapping], n_ops: int) -> Tuple[np.ndarray, np.ndarray, int]:
    if not history:
        raise ValueError('plot_alpha_history: history is empty; record alpha_softmax() at least once')
    arrays = {}
    for cell in ('normal', 'reduce'):
        rows = []
        for i, entry in enumerate(history):
            if cell not in entry:
                raise ValueError(f'history[{i}] has no {cell!r} key (expected phase, epoch, normal, reduce)')
            a = np.asarray(entry[cell], dtype=float)
            if a.ndim != 2 or a.shape[1] != n_ops:
                raise ValueError(f'history[{i}][{cell!r}] has shape {a.shape}; expected (edges, {n_ops}) '
                                 f'for {n_ops} primitives')
            if rows and a.shape != rows[0].shape:
                raise ValueError(f'history[{i}][{cell!r}] has shape {a.shape}, history[0] has {rows[0].shape}')
            rows.append(a)
        arrays[cell] = np.stack(rows)  # (time, edges, ops)
    steps = _steps_for(arrays['normal'].shape[1])
    if _steps_for(arrays['reduce'].shape[1]) != steps:
        raise ValueError('normal and reduce cells of the history have different numbers of edges')
    return arrays['normal'], arrays['reduce'], steps


def _phase_runs(history: Sequence[Mapping]) -> List[Tuple[str, int, int]]:
    """Contiguous runs of one phase: (name, first index, last index)."""
    runs: List[Tuple[str, int, int]] = []
    for i, entry in enumerate(history):
        name = str(entry.get('phase', ''))
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1], i)
        else:
            runs.append((name, i, i))
    return runs


def _name_phases(ax, runs: Sequence[Tuple[str, int, int]], T: int, panel_w: float, ybottom: float,
                 ytop: float) -> None:
    """Write each phase's name at the top of its band, where the band is wide enough for it."""
    for name, a, b in runs:
        width_in = (b - a + 1) / T * panel_w * 0.8
        if name and width_in >= len(name) * 6.5 * 0.6 / 72:
            ax.text((a + b) / 2, ytop - 0.03 * (ytop - ybottom), name, fontsize=6.5, ha='center', va='top', color='#444444',
                    zorder=3, bbox=dict(boxstyle='round,pad=0.1', fc='white', ec='none', alpha=0.6))


def plot_alpha_history(history: List[dict], path: PathLike, primitives: Sequence[str] = PRIMITIVES) -> None:
    """Plot softmax(alpha) of every edge over the whole search into one PNG at ``path``.

    ``history`` holds one entry per recorded epoch, in order: ``{'phase': str, 'epoch': int,
    'normal': edges x ops, 'reduce': edges x ops}`` (as from ``Supernet.alpha_softmax()``). One small
    panel per edge, laid out node by node (rows) and input by input (columns), normal cell left,
    reduction cell right; one line per op; shaded bands mark the phases.
    """
    primitives = tuple(primitives)
    normal, reduce, steps = _check_history(history, len(primitives))
    colors = op_colors(primitives)
    runs = _phase_runs(history)
    phase_names = list(dict.fromkeys(name for name, _, _ in runs))
    phase_color = {name: _PHASE_COLORS[k % len(_PHASE_COLORS)] for k, name in enumerate(phase_names)}
    T = len(history)
    x = np.arange(T)
    marker = 'o' if T <= 30 else None
    # the y range follows the data: early in a search all weights sit near 1 / len(primitives)
    ymin = min(float(normal.min()), float(reduce.min()))
    ymax = max(float(normal.max()), float(reduce.max()))
    pad = max(0.12 * (ymax - ymin), 0.002)
    ybottom, ytop = max(0.0, ymin - pad), min(1.0, ymax + 2.5 * pad)

    cols = steps + 1  # node j has 2 + j inputs; the last node has steps + 1
    panel_w, panel_h = 1.9, 1.4
    fig = Figure(figsize=(panel_w * (2 * cols + 0.3), panel_h * steps + 1.5))
    top = 1 - 0.75 / fig.get_figheight()
    bottom = 0.75 / fig.get_figheight()
    gs = fig.add_gridspec(steps, 2 * cols + 1, width_ratios=[1] * cols + [0.3] + [1] * cols,
                          left=0.03, right=0.99, top=top, bottom=bottom, wspace=0.28, hspace=0.45)
    first = None
    for block, (cell_name, data) in enumerate((('normal cell', normal), ('reduction cell', reduce))):
        col0 = block * (cols + 1)
        offset = 0
        for j in range(steps):
            for i in range(2 + j):
                ax = fig.add_subplot(gs[j, col0 + i], sharex=first, sharey=first)
                first = first or ax
                for name, a, b in runs:
                    ax.axvspan(a - 0.5, b + 0.5, color=phase_color[name], zorder=0, lw=0)
                    if a > 0:
                        ax.axvline(a - 0.5, color='#555555', lw=0.8, ls=':', zorder=1)
                for o, op in enumerate(primitives):
                    ax.plot(x, data[:, offset + i, o], color=colors[op], lw=1.3, marker=marker, ms=2.5,
                            ls=':' if op == 'none' else '-', zorder=2)
                src = _input_name(i) if i < 2 else f'node {i - 2}'
                ax.set_title(f'node {j} $\\leftarrow$ {src}', fontsize=8.5, pad=3)
                if j == 0:
                    _name_phases(ax, runs, T, panel_w, ybottom, ytop)
                ax.tick_params(labelsize=7, length=2, pad=1.5)
                ax.grid(True, axis='y', color='white', lw=0.6, zorder=1)
                if i > 0:
                    ax.tick_params(labelleft=False)
                if j < steps - 1:
                    ax.tick_params(labelbottom=False)  # every column ends in the last row, which shows epochs
                else:
                    ax.set_xlabel('epoch (whole search)', fontsize=7.5, labelpad=1)
                if j == 0 and i == 0:
                    ax.set_ylabel('softmax(alpha)', fontsize=7.5, labelpad=1)
            offset += 2 + j
        # cell name above the block
        bb = gs[0, col0:col0 + cols].get_position(fig)
        fig.text((bb.x0 + bb.x1) / 2, top + 0.42 / fig.get_figheight(), cell_name, ha='center', va='center',
                 fontsize=12, fontweight='bold')
    first.set_xlim(-0.5, T - 0.5)
    first.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True, min_n_ticks=1))
    first.set_ylim(ybottom, ytop)
    handles = [Line2D([], [], color=colors[op], lw=2, ls=':' if op == 'none' else '-', label=op)
               for op in primitives]
    handles += [Patch(fc=phase_color[name], ec='#999999', lw=0.5, label=f'phase: {name}' if name else 'phase')
                for name in phase_names]
    fig.legend(handles=handles, loc='lower center', ncol=len(handles), fontsize=8.5, frameon=False,
               handlelength=1.8, columnspacing=1.2)
    _write_png(fig, path)
