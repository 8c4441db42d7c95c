"""CPU latency of the deployment forms of a 99% sparse network against its masked-dense form.

    python benchmarks/bench_latency.py                       # prdarts_c10 and mobilenetv2_100 (CIFAR stem), k = 0.01
    python benchmarks/bench_latency.py --networks prdarts_c10_micro --batch_sizes 1 --threads 1 --output lat.json

For each network (random mask of k per layer, baked; latency does not depend on the trained values), batch
size and thread count, the median forward time (``torch.inference_mode``, eval) of:

* ``masked-dense``: the baked network in PyTorch, dense kernels computing the zeros (how the paper's code runs);
* ``compacted``: dead channels removed, BN folded (``prdarts_timm.compact.compact``);
* ``sparse-kernels``: the compacted network with the 1x1 convs and the classifier as CSR products where a
  per-layer timing at this batch size and thread count found them faster
  (``prdarts_timm.deploy.use_sparse_kernels``);
* ``onnxruntime``: the compacted network exported to ONNX (``prdarts_timm.deploy.export_onnx``), ONNX
  Runtime on the CPU with all graph optimisations.

The table at the end gives, per network, batch size and thread count, the speedup of the fastest deployed form
over masked-dense. Timings vary between machines and
with other load: run it on an idle machine and report the CPU it names.
"""
import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

import prdarts_timm
from prdarts_timm.builder import create_model
from prdarts_timm.compact import compact
from prdarts_timm.deploy import export_onnx, onnx_session, use_sparse_kernels
from prdarts_timm.layers import convert_to_pruned
from prdarts_timm.profile import cpu_name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--networks', nargs='+', default=['prdarts_c10', 'mobilenetv2_100'],
                        help='timm names; ResNets / MobileNets get the CIFAR stem')
    parser.add_argument('--k', type=float, default=0.01, help='fraction of weights kept per layer')
    parser.add_argument('--batch_sizes', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--output', help='JSON file for every measurement')
    return parser.parse_args()


def build(name: str, k: float, seed: int) -> torch.nn.Module:
    """``name`` with a random mask of ``k`` per layer, baked, in eval mode."""
    torch.manual_seed(seed)
    timm_family = not name.startswith(('prdarts', 'darts'))
    model = convert_to_pruned(create_model(name, cifar_stem=timm_family, num_classes=10))
    prdarts_timm.set_pruning(model, 'learn', k=k)
    for module in model.modules():
        if isinstance(module, prdarts_timm.PrunedLayer) and module.scores is not None:
            module.scores.data.uniform_()
    prdarts_timm.set_pruning(model, 'fixed', k=k)
    return prdarts_timm.bake(model).eval()


def median_ms(run: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    results: List[Dict] = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            model = build(name, args.k, args.seed)
            report = prdarts_timm.sparsity_report(model)
            compacted = copy.deepcopy(model)
            print(f'{name}: compacted, {compact(compacted)}', flush=True)
            deployed = compacted
            onnx_path = export_onnx(deployed, Path(tmp) / f'{name}.onnx', (3, 32, 32))
            for threads in args.threads:
                torch.set_num_threads(threads)
                session = onnx_session(onnx_path, threads)
                for batch in args.batch_sizes:
                    x = torch.randn(batch, 3, 32, 32)
                    sparse = copy.deepcopy(deployed)
                    choices = use_sparse_kernels(sparse, x, threads=threads)
                    forms = {
                        'masked-dense': lambda: model(x),
                        'compacted': lambda: compacted(x),
                        'sparse-kernels': lambda: sparse(x),
                        'onnxruntime': lambda: session.run(None, {'input': x.numpy()}),
                    }
                    with torch.inference_mode():
                        for form, run in forms.items():
                            ms = median_ms(run, args.warmup, args.repeats)
                            results.append(dict(network=name, form=form, batch_size=batch, threads=threads,
                                                median_ms=ms, sparsity=report.sparsity,
                                                sparse_layers=sum(c.sparse for c in choices) if form == 'sparse-kernels' else None,
                                                candidate_layers=len(choices)))
                            print(f'{name:18s} b{batch:<3d} {threads} thr  {form:15s} {ms:9.2f} ms', flush=True)
    print(f'\n{cpu_name()}, torch {torch.__version__}, k = {args.k}, median of {args.repeats} runs; '
          f'{time.time() - started:.0f} s in all\n')
    print('| network | batch | threads | masked-dense | compacted | compacted + sparse kernels | ONNX Runtime '
          '| best vs masked-dense |')
    print('|---|---|---|---|---|---|---|---|')
    for name in args.networks:
        for threads in args.threads:
            for batch in args.batch_sizes:
                row = {r['form']: r['median_ms'] for r in results
                       if (r['network'], r['threads'], r['batch_size']) == (name, threads, batch)}
                best = min(v for f, v in row.items() if f != 'masked-dense')
                cells = ' | '.join(f'{row[f]:.2f} ms' if f in row else 'n/a' for f in (
                    'masked-dense', 'compacted', 'sparse-kernels', 'onnxruntime'))
                print(f"| {name} | {batch} | {threads} | {cells} | {row['masked-dense'] / best:.2f}x |")
    if args.output:
        Path(args.output).write_text(json.dumps(dict(cpu=cpu_name(), torch=torch.__version__, k=args.k,
                                                     repeats=args.repeats, results=results), indent=1))


if __name__ == '__main__':
    main()
