"""CPU latency of the deployment forms of a 99% sparse network against its masked-dense form.

    python benchmarks/bench_latency.py        # prdarts_c10 and mobilenetv2_100 (random masks), the trained tag
    python benchmarks/bench_latency.py --networks prdarts_c10_micro --batch_sizes 1 --threads 1 --output lat.json

A network named with a pretrained tag (``prdarts_c10_micro.sp99_cifar10``) is the published trained network
with its learned mask; any other name gets a random mask keeping ``--k`` of each layer
(``prdarts_timm.set_random_masks``). Either is baked. For each network, batch size and thread count, the
forward time of each form (``prdarts_timm.profile.compare_ms``: the forms take turns over ``--rounds`` rounds
of ``--repeats`` runs, and each reports its lowest round median, so a burst of other load does not land on
one form only):

* ``masked-dense``: the baked network in PyTorch, dense kernels computing the zeros (how the paper's code runs);
* ``masked-dense-cl``: the same in channels-last memory format (1.4-1.6x faster at batch 1 on a 2-core AMD EPYC);
* ``compacted``: dead channels removed, constants folded, BN folded (``prdarts_timm.compact.compact``);
* ``sparse-kernels``: the compacted network with the 1x1 convs and the classifier as CSR products where a
  per-layer timing at this batch size and thread count found them faster
  (``prdarts_timm.deploy.use_sparse_kernels``);
* ``onnxruntime-masked``: the baked network, not compacted, in ONNX Runtime (what the runtime alone gives);
* ``onnxruntime``: the compacted network in ONNX Runtime (``prdarts_timm.deploy.export_onnx``; all graph
  optimisations), the form ``recipes/export.py --deploy`` writes.

A dense network (a ``dense_*`` tag, ``--k 1``) has no dead channel to remove: it gets the two masked-dense forms and
``onnxruntime-masked`` only (PyTorch and ONNX Runtime, as it is).

The table at the end gives, per network, batch size and thread count, the speedup of the fastest deployed form
over the faster masked-dense layout, and what compaction adds inside ONNX Runtime. Timings vary between machines
and with other load: run it on an idle machine and report the CPU it names.
"""
import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import timm
import torch

import prdarts_timm
from prdarts_timm.builder import create_model
from prdarts_timm.compact import compact
from prdarts_timm.deploy import export_onnx, onnx_session, use_sparse_kernels
from prdarts_timm.io import atomic_write_json
from prdarts_timm.layers import convert_to_pruned
from prdarts_timm.profile import compare_ms, cpu_name

FORMS = ('masked-dense', 'masked-dense-cl', 'compacted', 'sparse-kernels', 'onnxruntime-masked', 'onnxruntime')
PYTORCH_AS_IS = ('masked-dense', 'masked-dense-cl')  # the baseline: the faster of the two memory layouts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--networks', nargs='+',
                        default=['prdarts_c10', 'mobilenetv2_100', 'prdarts_c10_micro.sp99_cifar10'],
                        help='timm names (ResNets / MobileNets get the CIFAR stem); name.tag loads that '
                             'published trained network')
    parser.add_argument('--k', type=float, default=0.01, help='fraction of weights kept per layer (random masks)')
    parser.add_argument('--batch_sizes', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per round')
    parser.add_argument('--rounds', type=int, default=3,
                        help='interleaved rounds over the forms; each form reports its lowest round median')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--output', help='JSON file for every measurement')
    return parser.parse_args()


def build(name: str, k: float, seed: int) -> torch.nn.Module:
    """The published trained ``name`` (with a tag), or ``name`` with a random mask of ``k`` per layer; baked, eval."""
    if '.' in name:
        return prdarts_timm.bake(timm.create_model(name, pretrained=True)).eval()
    timm_family = not name.startswith(('prdarts', 'darts'))
    model = convert_to_pruned(create_model(name, cifar_stem=timm_family, num_classes=10))
    prdarts_timm.set_random_masks(model, k, seed)
    return prdarts_timm.bake(model).eval()


def main() -> None:
    args = parse_args()
    results: List[Dict] = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            model = build(name, args.k, args.seed)
            model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
            report = prdarts_timm.sparsity_report(model)
            # a dense network (a dense_* tag) has nothing to compact: it runs as it is, in PyTorch and ONNX Runtime
            compacted = copy.deepcopy(model) if report.sparsity > 0 else None
            print(f'{name}: sparsity {report.sparsity:.2%}, compacted: '
                  f'{compact(compacted) if compacted is not None else "n/a (dense)"}', flush=True)
            onnx_masked = export_onnx(model, Path(tmp) / f'{name}-masked.onnx', (3, 32, 32))
            onnx_compacted = (export_onnx(compacted, Path(tmp) / f'{name}.onnx', (3, 32, 32))
                              if compacted is not None else None)
            for threads in args.threads:
                torch.set_num_threads(threads)
                sessions = {path: onnx_session(path, threads) for path in (onnx_masked, onnx_compacted) if path}
                for batch in args.batch_sizes:
                    x = torch.randn(batch, 3, 32, 32)
                    x_cl = x.contiguous(memory_format=torch.channels_last)
                    forms = {
                        'masked-dense': lambda: model(x),
                        'masked-dense-cl': lambda: model_cl(x_cl),
                        'onnxruntime-masked': lambda: sessions[onnx_masked].run(None, {'input': x.numpy()}),
                    }
                    choices = []
                    if compacted is not None:
                        sparse = copy.deepcopy(compacted)
                        choices = use_sparse_kernels(sparse, x, threads=threads)
                        forms.update({
                            'compacted': lambda: compacted(x),
                            'sparse-kernels': lambda: sparse(x),
                            'onnxruntime': lambda: sessions[onnx_compacted].run(None, {'input': x.numpy()}),
                        })
                    with torch.inference_mode():
                        times = compare_ms(forms, args.warmup, args.repeats, args.rounds)
                    for form, ms in times.items():
                        results.append(dict(
                            network=name, form=form, batch_size=batch, threads=threads, median_ms=ms,
                            sparsity=report.sparsity, candidate_layers=len(choices),
                            sparse_layers=sum(c.sparse for c in choices) if form == 'sparse-kernels' else None))
                        print(f'{name:30s} b{batch:<3d} {threads} thr  {form:18s} {ms:9.2f} ms', flush=True)
    print(f'\n{cpu_name()}, torch {torch.__version__}, lowest of {args.rounds} interleaved medians of '
          f'{args.repeats} runs; {time.time() - started:.0f} s in all\n')
    print('| network | batch | threads | masked-dense | masked-dense, channels-last | compacted | compacted + sparse '
          'kernels | ONNX Runtime, masked | ONNX Runtime, compacted | best vs masked-dense | compaction in ONNX '
          'Runtime |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for name in args.networks:
        for threads in args.threads:
            for batch in args.batch_sizes:
                row = {r['form']: r['median_ms'] for r in results
                       if (r['network'], r['threads'], r['batch_size']) == (name, threads, batch)}
                best = min(v for f, v in row.items() if f not in PYTORCH_AS_IS)
                baseline = min(row[f] for f in PYTORCH_AS_IS)
                cells = ' | '.join(f'{row[f]:.2f} ms' if f in row else 'n/a' for f in FORMS)
                compaction = (f"{row['onnxruntime-masked'] / row['onnxruntime']:.2f}x" if 'onnxruntime' in row
                              else 'n/a')
                print(f"| {name} | {batch} | {threads} | {cells} | {baseline / best:.2f}x "
                      f"| {compaction} |")
    if args.output:
        atomic_write_json(args.output, dict(cpu=cpu_name(), torch=torch.__version__, k=args.k,
                                            repeats=args.repeats, rounds=args.rounds, results=results))


if __name__ == '__main__':
    main()
