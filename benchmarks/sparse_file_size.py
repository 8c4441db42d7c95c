"""Size of the compact sparse safetensors encoding (export --sparse) against the plain file.

    python benchmarks/sparse_file_size.py

Registered PR-DARTS models with random scores pruned to k = 0.01 per layer and baked; both files are
serialised in memory with safetensors. Prints one row per model.
"""
import timm
import torch
from safetensors.torch import save

import prdarts_timm
from prdarts_timm.checkpoint import encode_sparse


def main() -> None:
    torch.manual_seed(0)
    print('| model | plain bytes | sparse bytes | ratio |\n|---|---|---|---|')
    for name in ('prdarts_c10_mini', 'prdarts_c10'):
        model = timm.create_model(name)
        prdarts_timm.set_pruning(model, 'fixed', k=0.01)
        state = {k: v.contiguous() for k, v in prdarts_timm.bake(model).state_dict().items()}
        plain, sparse = len(save(state)), len(save(encode_sparse(state)))
        print(f'| {name} | {plain} | {sparse} | {100 * sparse / plain:.1f}% |')


if __name__ == '__main__':
    main()
