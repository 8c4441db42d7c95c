"""The prepared GPU session (benchmarks/gpu_session.sh) rehearsed on the CPU with its --dry budget: every step
runs and the files it promises are in $OUT, the Hub folder among them loading by timm's local-dir."""
import json
import math
import os
import subprocess
import tarfile
from pathlib import Path

import timm
import torch

import prdarts_timm  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_session_dry_run(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), TMPDIR=str(tmp_path), HF_HUB_OFFLINE='1', OMP_NUM_THREADS='2')
    result = subprocess.run(['bash', 'benchmarks/gpu_session.sh', '--dry'], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ['evaluate.json', 'prdarts_c10.sp99_cifar10.hub.tar.gz', 'pytest_cuda.txt', 'session.log',
                     'summaries.json', 'throughput.json'], log[-4000:]
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 * 2**20 for f in files)
    assert 'skipped' in (out / 'pytest_cuda.txt').read_text()  # no GPU here: the cuda tests skip cleanly
    throughput = json.loads((out / 'throughput.json').read_text())
    assert set(throughput['retrain']) == {'fp32_nchw', 'bf16_channels_last'} and len(throughput['search']) == 4
    summaries = json.loads((out / 'summaries.json').read_text())
    assert {'pretrain', 'prune', 'finetune'} <= set(summaries)
    assert summaries['finetune']['weights']['sparsity'] > 0.95
    for stage in ('pretrain', 'prune', 'finetune'):  # bf16 trained: no NaN reached the weights
        assert all(math.isfinite(epoch['train_loss']) for epoch in summaries[stage]['history']), stage
    assert 0 <= json.loads((out / 'evaluate.json').read_text())['top1'] <= 100
    with tarfile.open(out / 'prdarts_c10.sp99_cifar10.hub.tar.gz') as tar:
        tar.extractall(tmp_path / 'hub', filter='data')
    model = timm.create_model(f'local-dir:{tmp_path / "hub" / "prdarts_c10.sp99_cifar10"}', pretrained=True).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert not list(tmp_path.glob('prdarts_gpu_session.*'))  # its work folder is removed
