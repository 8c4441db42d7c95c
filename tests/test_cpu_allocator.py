"""keep_freed_memory: glibc keeps large blocks in its heap, so a freed activation is reused, not faulted in."""
import platform
import subprocess
import sys

import pytest

from prdarts_timm.cpu_allocator import keep_freed_memory

ON_GLIBC = platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc'


@pytest.mark.skipif(not ON_GLIBC, reason='glibc only')
def test_freed_blocks_stay_in_the_process():
    """After it, a freed 64 MiB block is not given back: allocating it again faults in no new page."""
    code = '''
import resource, sys, torch
from prdarts_timm.cpu_allocator import keep_freed_memory
def faults_of_two_allocations():
    torch.ones(16 * 2**20).sum()  # 64 MiB, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
default = faults_of_two_allocations()
assert keep_freed_memory() and keep_freed_memory()
faults_of_two_allocations()  # the heap grows once
print(default, faults_of_two_allocations())
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    default, kept = int(out[0]), int(out[1])
    assert default > 1000  # 16,384 pages of 4 KiB faulted in again with glibc's defaults
    assert kept < default / 10


@pytest.mark.skipif(ON_GLIBC, reason='without glibc only')
def test_elsewhere_it_does_nothing():
    assert keep_freed_memory() is False
