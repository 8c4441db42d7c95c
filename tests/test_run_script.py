"""python -m prdarts_timm.run_script runs a script that knows only timm's API with the plugin registered."""
import os
import subprocess
import sys
from pathlib import Path

import timm
import torch

import prdarts_timm  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'tests' / 'fixtures' / 'timm_scripts' / 'validate_like.py'
ENV = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
TAG = 'prdarts_c10_micro.sp95_cifar10'


def test_a_timm_only_script_runs_a_tag_by_name(tmp_path):
    alone = subprocess.run([sys.executable, str(SCRIPT), '--model', TAG], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode != 0 and 'Unknown model' in alone.stderr  # without the plugin timm knows no such model
    routed = subprocess.run([sys.executable, '-m', 'prdarts_timm.run_script', str(SCRIPT), '--model', TAG],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert routed.returncode == 0, routed.stderr[-2000:]
    model = timm.create_model(TAG, pretrained=True).eval()
    with torch.no_grad():
        index = int(model(torch.zeros(1, 3, 32, 32)).argmax())
    assert routed.stdout.strip() == f'{TAG}: class {index} {model.pretrained_cfg["label_names"][index]}'


def test_a_missing_script_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'prdarts_timm.run_script', str(tmp_path / 'validate.py')],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'is no file' in result.stderr and 'Traceback' not in result.stderr
