""" Small generated image data sets of other domains than CIFAR-10, written as ImageFolders.

For fine-tuning benchmarks and tests on a machine without downloads: every image is drawn with PIL from a
seeded generator, so the same call writes the same files anywhere.

* ``'glyphs'``: the digits 0-9 rendered in Pillow's built-in font at random sizes, rotations, positions and
  colours over a noisy background (text, not photographs; a mirrored 2 is no 2, so flips hurt).
* ``'shapes'``: ten filled geometric shapes (circle, square, triangle, ...) at random sizes, rotations,
  positions and colours over a random gradient.

``make_imagefolder('glyphs', 'data/glyphs')`` writes ``data/glyphs/{train,test}/<class>/<n>.png``, 130 train
and 50 test images per class by default (1,300 / 500). ``size`` and ``mode`` ('RGB' or 'L') give other input
sizes and grey images.
"""
import math
import os
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_write

__all__ = ['KINDS', 'make_imagefolder']

_DRAW = 96  # every image is drawn at this size, then resized (smooth edges at any output size)


def _colours(rng: np.random.Generator) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """A foreground and a background colour at least 80 grey levels apart."""
    while True:
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if abs(int(fg.mean()) - int(bg.mean())) >= 80:
            return tuple(int(v) for v in fg), tuple(int(v) for v in bg)


def _background(rng: np.random.Generator, bg: Tuple[int, ...]) -> Image.Image:
    """``bg`` with a random linear gradient and pixel noise."""
    yy, xx = np.mgrid[0:_DRAW, 0:_DRAW] / _DRAW
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(-60, 60)
    noise = rng.normal(0, 12, (_DRAW, _DRAW, 3))
    pixels = np.clip(np.asarray(bg, dtype=np.float64) + ramp + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, 'RGB')


def _glyph(label: int, rng: np.random.Generator) -> Image.Image:
    fg, bg = _colours(rng)
    font = ImageFont.load_default(size=int(rng.integers(56, 80)))
    layer = Image.new('L', (_DRAW, _DRAW), 0)
    draw = ImageDraw.Draw(layer)
    text = str(label)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (_DRAW - (right - left)) / 2 - left + rng.uniform(-8, 8)
    y = (_DRAW - (bottom - top)) / 2 - top + rng.uniform(-8, 8)
    draw.text((x, y), text, fill=255, font=font, stroke_width=int(rng.integers(0, 3)), stroke_fill=255)
    layer = layer.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR)
    image = _background(rng, bg)
    image.paste(Image.new('RGB', image.size, fg), mask=layer)
    return image


def _polygon(sides: int, star: bool = False) -> Callable[[float], List[Tuple[float, float]]]:
    def points(rotation: float) -> List[Tuple[float, float]]:
        count = sides * 2 if star else sides
        radii = [1.0 if i % 2 == 0 or not star else 0.45 for i in range(count)]
        return [(r * math.cos(rotation + 2 * math.pi * i / count), r * math.sin(rotation + 2 * math.pi * i / count))
                for i, r in enumerate(radii)]
    return points


_SHAPES = ('circle', 'ring', 'square', 'triangle', 'diamond', 'pentagon', 'hexagon', 'star', 'cross', 'bar')


def _shape(label: int, rng: np.random.Generator) -> Image.Image:
    fg, bg = _colours(rng)
    image = _background(rng, bg)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(18, 36)
    cx, cy = _DRAW / 2 + rng.uniform(-12, 12), _DRAW / 2 + rng.uniform(-12, 12)
    rotation = rng.uniform(0, 2 * math.pi)
    name = _SHAPES[label]
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if name == 'circle':
        draw.ellipse(box, fill=fg)
    elif name == 'ring':
        draw.ellipse(box, outline=fg, width=max(4, int(radius / 3)))
    elif name in ('cross', 'bar'):
        arms = (0.0, math.pi / 2) if name == 'cross' else (0.0,)
        for arm in arms:
            c, s = math.cos(rotation + arm), math.sin(rotation + arm)
            w = radius / 3.5
            corners = [(-radius, -w), (radius, -w), (radius, w), (-radius, w)]
            draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=fg)
    else:
        sides = dict(square=4, triangle=3, diamond=4, pentagon=5, hexagon=6, star=5)[name]
        outline = _polygon(sides, star=name == 'star')(rotation)
        if name == 'diamond':  # a rhombus: one diagonal stretched
            outline = [(x * 1.0, y * 0.55) for x, y in _polygon(4)(0.0)]
            c, s = math.cos(rotation), math.sin(rotation)
            outline = [(x * c - y * s, x * s + y * c) for x, y in outline]
        draw.polygon([(cx + radius * x, cy + radius * y) for x, y in outline], fill=fg)
    return image


KINDS: Dict[str, Tuple[Tuple[str, ...], Callable[[int, np.random.Generator], Image.Image]]] = {
    'glyphs': (tuple(str(d) for d in range(10)), _glyph),
    'shapes': (_SHAPES, _shape),
}


def make_imagefolder(kind: str, root: os.PathLike, train_per_class: int = 130, test_per_class: int = 50,
                     size: int = 32, mode: str = 'RGB', seed: int = 0) -> Path:
    """Write the ``kind`` data set as ``root/{train,test}/<class>/<n>.png`` (``size`` x ``size``, ``mode``
    'RGB' or 'L'); returns ``root``. The same arguments write the same pixels. Files are written atomically;
    an existing folder is overwritten file by file."""
    if kind not in KINDS:
        raise ValueError(f'unknown synthetic data set {kind!r}; choose one of {sorted(KINDS)}')
    if mode not in ('RGB', 'L'):
        raise ValueError(f"mode must be 'RGB' or 'L' (grey), got {mode!r}")
    if size < 8 or train_per_class < 1 or test_per_class < 0:
        raise ValueError(f'size must be >= 8 and train_per_class >= 1 (test_per_class >= 0), got size {size}, '
                         f'{train_per_class} / {test_per_class} per class')
    classes, draw = KINDS[kind]
    root = Path(root)
    for split_index, (split, count) in enumerate((('train', train_per_class), ('test', test_per_class))):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                rng = np.random.default_rng([seed, split_index, label, n])
                image = draw(label, rng).resize((size, size), Image.BILINEAR).convert(mode)
                atomic_write(folder / f'{n:04d}.png', lambda tmp: image.save(tmp, format='PNG'))
    return root
