"""The search pictures: cells as graphs and the alpha history, written as valid PNGs, atomically."""
import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pytest

import prdarts_timm
from prdarts_timm import PRIMITIVES, Genotype
from prdarts_timm import plots
from prdarts_timm.plots import op_colors, plot_alpha_history, plot_cells

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

TWO_NODES = Genotype(
    normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 2), ('max_pool_3x3', 0)],
    normal_concat=[2, 3],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('avg_pool_3x3', 2), ('sep_conv_5x5', 1)],
    reduce_concat=[2, 3],
)


def _check_png(path, min_side=200):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert min(img.shape[:2]) >= min_side and max(img.shape[:2]) <= 4000
    assert img.std() > 0.01  # something was drawn
    assert path.stat().st_size < 2_000_000
    leftovers = [p.name for p in path.parent.iterdir() if p.name != path.name and p.suffix != '.png']
    assert leftovers == [], f'temporary files left behind: {leftovers}'


def _history(phases, rng):
    history = []
    for phase, epochs in phases:
        for epoch in range(epochs):
            entry = {'phase': phase, 'epoch': epoch}
            for cell in ('normal', 'reduce'):
                z = np.exp(rng.normal(size=(14, len(PRIMITIVES))))
                entry[cell] = (z / z.sum(axis=1, keepdims=True)).tolist()
            history.append(entry)
    return history


@pytest.mark.parametrize('name', ['prdarts_99', 'darts_v2'])
def test_plot_cells_shipped(tmp_path, name):
    path = tmp_path / f'{name}.png'
    plot_cells(prdarts_timm.get_genotype(name), path)
    _check_png(path)


def test_plot_cells_two_nodes_creates_folder(tmp_path):
    path = tmp_path / 'new' / 'deeper' / 'cells.png'
    plot_cells(TWO_NODES, str(path))
    _check_png(path)


def test_plot_alpha_history_three_phases(tmp_path):
    history = _history([('pretrain', 3), ('prune', 4), ('finetune', 3)], np.random.default_rng(0))
    path = tmp_path / 'alpha.png'
    plot_alpha_history(history, path)
    _check_png(path)


def test_plot_alpha_history_single_entry_overwrites(tmp_path):
    path = tmp_path / 'alpha.png'
    path.write_bytes(b'old')
    plot_alpha_history(_history([('pretrain', 1)], np.random.default_rng(1)), path)
    _check_png(path)


def test_plot_alpha_history_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match='empty'):
        plot_alpha_history([], tmp_path / 'a.png')
    bad = _history([('pretrain', 1)], np.random.default_rng(2))
    bad[0]['normal'] = bad[0]['normal'][:13]  # 13 edges is no cell
    with pytest.raises(ValueError, match='13 edges'):
        plot_alpha_history(bad, tmp_path / 'a.png')
    assert list(tmp_path.iterdir()) == []


def test_failed_render_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / 'cells.png'
    path.write_bytes(b'previous picture')

    def boom(*args, **kwargs):
        raise RuntimeError('disk full')

    monkeypatch.setattr(plots.Figure, 'savefig', boom)
    with pytest.raises(RuntimeError, match='disk full'):
        plot_cells(TWO_NODES, path)
    assert path.read_bytes() == b'previous picture'
    assert [p.name for p in tmp_path.iterdir()] == ['cells.png']


def test_colors_distinct_and_stable():
    colors = op_colors()
    assert set(colors) == set(PRIMITIVES) and len(set(colors.values())) == len(PRIMITIVES)
    assert op_colors(('max_pool_3x3', 'my_op'))['max_pool_3x3'] == colors['max_pool_3x3']


def test_pyplot_state_untouched(tmp_path):
    import matplotlib.pyplot as plt
    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    plot_cells(TWO_NODES, tmp_path / 'cells.png')
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures
