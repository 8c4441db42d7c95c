"""Compute and speed of a (pruned) network: MACs counted from one forward, CPU latency.

MACs are counted for ``nn.Conv2d`` and ``nn.Linear`` layers only (pruned layers subclass them); norms,
activations, pooling and additions are not counted. *Dense* MACs are what the layer's shape costs;
*effective* MACs count only the weights the forward actually uses (``W * m``): the work a sparse kernel
would do. Both are per image.
"""
import contextlib
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import torch
import torch.nn as nn

from .layers import forward_weight

__all__ = ['LayerMacs', 'MacReport', 'compare_ms', 'count_macs', 'measure_latency', 'median_ms', 'time_ms']


@dataclass
class LayerMacs:
    name: str
    kind: str  # 'conv' or 'linear'
    dense: int
    effective: int


@dataclass
class MacReport:
    """Per-layer and total multiply-accumulates of one image, dense and counting kept weights only."""
    input_size: Tuple[int, ...]
    layers: List[LayerMacs] = field(default_factory=list)

    @property
    def dense(self) -> int:
        return sum(layer.dense for layer in self.layers)

    @property
    def effective(self) -> int:
        return sum(layer.effective for layer in self.layers)

    def to_dict(self) -> Dict:
        return dict(input_size=list(self.input_size), dense=self.dense, effective=self.effective,
                    layers=[dict(name=m.name, kind=m.kind, dense=m.dense, effective=m.effective)
                            for m in self.layers])


@torch.no_grad()
@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside, every module's own train / eval flag restored afterwards."""
    training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, flag in training.items():
            module.training = flag


def _example_input(model: nn.Module, batch_size: int, input_size: Sequence[int], random: bool) -> torch.Tensor:
    ref = next(iter(model.parameters()), None)
    kwargs = dict(device=ref.device, dtype=ref.dtype) if ref is not None else {}
    make = torch.randn if random else torch.zeros
    return make(batch_size, *input_size, **kwargs)


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> MacReport:
    """MACs of one image of ``input_size`` (C, H, W), from a forward in eval mode with hooks on every
    ``nn.Conv2d`` / ``nn.Linear``. A layer called several times counts each call.

    Conv: dense ``out_h * out_w * out_channels * in_channels / groups * kh * kw``, effective
    ``out_h * out_w * nonzero(W * m)``. Linear: dense ``in * out`` per output row, effective ``nonzero(W * m)``
    per output row. The model's train / eval mode is left as it was.
    """
    report = MacReport(tuple(int(s) for s in input_size))
    nonzero: Dict[nn.Module, int] = {}

    def hook(name: str):
        def count(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if module not in nonzero:
                nonzero[module] = int(torch.count_nonzero(forward_weight(module)).item())
            if isinstance(module, nn.Conv2d):
                positions = output.shape[-2] * output.shape[-1]
                in_per_group = module.in_channels // module.groups
                dense = positions * module.out_channels * in_per_group * module.kernel_size[0] * module.kernel_size[1]
                report.layers.append(LayerMacs(name, 'conv', dense, positions * nonzero[module]))
            else:
                rows = output.numel() // max(module.out_features, 1)  # batch of 1: output rows of one image
                dense = rows * module.in_features * module.out_features
                report.layers.append(LayerMacs(name, 'linear', dense, rows * nonzero[module]))
        return count

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, (nn.Conv2d, nn.Linear))]
    try:
        with _eval_mode(model), torch.no_grad():
            model(_example_input(model, 1, input_size, random=False))
    finally:
        for handle in handles:
            handle.remove()
    return report


def time_ms(fn: Callable[[], Any], warmup: int, repeats: int) -> List[float]:
    """Wall times of ``repeats`` calls of ``fn`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds (:func:`time_ms`)."""
    return statistics.median(time_ms(fn, warmup, repeats))


def compare_ms(fns: Mapping[str, Callable[[], Any]], warmup: int, repeats: int, rounds: int = 3) -> Dict[str, float]:
    """Median wall time of each of ``fns`` in milliseconds, in ``rounds`` interleaved rounds of ``repeats`` runs;
    the lowest round median of each, so that a burst of other load slows one round of all, not one of them."""
    best: Dict[str, float] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            ms = median_ms(fn, warmup, repeats)
            best[name] = min(ms, best.get(name, ms))
    return best


def measure_latency(
        model: nn.Module,
        batch_size: int,
        input_size: Sequence[int],
        threads: int,
        warmup: int = 10,
        repeats: int = 50,
) -> Dict:
    """Forward time of one random batch (eval mode, ``torch.inference_mode``), ``repeats`` timed runs after
    ``warmup`` untimed ones, on ``threads`` intra-op threads (restored afterwards).

    Returns ``dict(median_ms, p90_ms, threads, batch_size, repeats)``.
    """
    if threads < 1 or batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f'need threads, batch_size, repeats >= 1 and warmup >= 0, got threads={threads}, '
                         f'batch_size={batch_size}, repeats={repeats}, warmup={warmup}')
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = _example_input(model, batch_size, input_size, random=True)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

        def run() -> None:
            model(x)
            sync()

        with _eval_mode(model), torch.inference_mode():
            times = time_ms(run, warmup, repeats)
    finally:
        torch.set_num_threads(previous)
    p90 = statistics.quantiles(times, n=10, method='inclusive')[-1] if len(times) > 1 else times[0]
    return dict(median_ms=statistics.median(times), p90_ms=p90, threads=threads, batch_size=batch_size,
                repeats=repeats)


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``) with the vector units that decide our kernels' speed (AVX2 only,
    AVX-512, native bf16: AVX512_BF16 / AMX), or what ``platform`` knows."""
    try:
        info = Path('/proc/cpuinfo').read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(':', 1)[1].strip() for line in info if line.startswith('model name')),
                platform.processor() or platform.machine())
    flags = set(next((line.split(':', 1)[1].split() for line in info if line.startswith('flags')), []))
    units = [u for u, present in (('AVX-512', 'avx512f' in flags), ('AVX2 only', 'avx2' in flags and
                                                                    'avx512f' not in flags),
                                   ('AVX512_BF16', 'avx512_bf16' in flags), ('AMX-BF16', 'amx_bf16' in flags))
             if present]
    return f'{name} ({", ".join(units)})' if units else name


def hardware_description(device: torch.device) -> str:
    """What a run ran on, for reports: the GPU name, or the CPU and its torch thread count."""
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)} (CUDA)'
    return f'{cpu_name()}, {torch.get_num_threads()} torch thread(s) per process'
