"""Training throughput on this machine's accelerator (the CPU where there is none): the retraining step of
``prdarts_c10`` (36 channels / 20 cells, auxiliary head, batch 128) and the search step of the supernet
(16 channels / 8 cells, batch 64, k = 0.01), each float32 NCHW beside bf16 autocast + channels-last, measured
in one run. Random input, as the recipes' tensor data path has it on the device already.

    python benchmarks/gpu_throughput.py --output throughput.json          # what benchmarks/gpu_session.sh runs
    python benchmarks/gpu_throughput.py --dry --output t.json             # tiny sizes, CPU rehearsal
"""
import argparse
import json
import time
from contextlib import nullcontext

import timm
import torch
import torch.nn.functional as F

import prdarts_timm  # noqa: F401  (registers the models)
from prdarts_timm import set_pruning
from prdarts_timm.io import atomic_write_json
from prdarts_timm.profile import hardware_description
from prdarts_timm.search import Architect, Phase, Supernet, enter_phase, search_step, trained_parameters


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _time(step, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _autocast(device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def retrain_step_s(device, bf16: bool, channels_last: bool, sizes, steps, warmup) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = timm.create_model('prdarts_c10', C=sizes['C'], layers=sizes['layers'], auxiliary=True,
                              drop_path_rate=0.2).to(device, memory_format=fmt).train()
    set_pruning(model, 'fixed', k=0.01)  # the finetune stage; pretrain is dense (cheaper)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(sizes['batch'], 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (sizes['batch'],), device=device)

    def step():
        with _autocast(device, bf16):
            logits, aux = model.forward_aux(x)
            loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    return _time(step, steps, warmup, device)


def search_step_s(device, bf16: bool, channels_last: bool, second_order: bool, sizes, steps, warmup) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = Supernet(C=sizes['search_C'], layers=sizes['search_layers'])
    phase = Phase('pretrain', 1, 0.025, k=0.01)
    enter_phase(model, phase)
    model.to(device, memory_format=fmt)
    optimizers = {g: torch.optim.SGD(p, lr=0.025) for g, p in trained_parameters(model, phase).items()}
    architect = Architect(model, torch.optim.Adam(model.arch_parameters(), lr=3e-4), second_order=second_order)
    bs = sizes['search_batch']
    batch = (torch.randn(bs, 3, 32, 32, device=device).contiguous(memory_format=fmt),
             torch.randint(0, 10, (bs,), device=device))

    def step():
        with _autocast(device, bf16):
            search_step(model, phase, architect, optimizers, batch, batch, weight_decay=3e-4)
    return _time(step, steps, warmup, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--output', required=True)
    parser.add_argument('--dry', action='store_true', help='tiny sizes and 1 step (a rehearsal on the CPU)')
    args = parser.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if args.dry:
        sizes = dict(C=4, layers=3, batch=8, search_C=2, search_layers=3, search_batch=4)
        steps, warmup = 1, 1
    else:
        sizes = dict(C=36, layers=20, batch=128, search_C=16, search_layers=8, search_batch=64)
        steps, warmup = 20, 5
    result = dict(hardware=hardware_description(device), torch=torch.__version__, sizes=sizes, steps=steps,
                  warmup=warmup, retrain={}, search={})
    for bf16, cl in ((False, False), (True, True)):
        name = 'bf16_channels_last' if bf16 else 'fp32_nchw'
        s = retrain_step_s(device, bf16, cl, sizes, steps, warmup)
        result['retrain'][name] = dict(step_s=s, img_s=sizes['batch'] / s)
        print(f'retrain {name}: {s * 1000:.1f} ms/step, {sizes["batch"] / s:.0f} img/s', flush=True)
        for second_order in (False, True):
            key = f'{name}_{"2nd" if second_order else "1st"}'
            s = search_step_s(device, bf16, cl, second_order, sizes, max(steps // 2, 1), max(warmup // 2, 1))
            result['search'][key] = dict(step_s=s, img_s=sizes['search_batch'] / s)
            print(f'search {key}: {s * 1000:.1f} ms/step, {sizes["search_batch"] / s:.0f} img/s', flush=True)
    atomic_write_json(args.output, result)


if __name__ == '__main__':
    main()
