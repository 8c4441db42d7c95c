"""Keep freed memory in the process on the CPU, so a training step does not page-fault its activations in anew.

glibc's ``malloc`` serves a block above its mmap threshold with a fresh ``mmap`` and gives it back to the kernel
when it is freed; the threshold adapts upwards but never past 32 MiB. A training step whose activations are
larger than that (``prdarts_c10_micro`` at batch 256: one 256 x 32 x 32 x 32 float tensor is 32 MiB, the
4-node concatenations 128 MiB) touches their pages for the first time again at every step, and its
element-wise kernels (ReLU, BatchNorm, adds) run at the speed of page faults. Where the activations stay
below the cap, the default allocator reuses its heap and this changes nothing measurable: one epoch of the
issue-15 schedule (micro, batch 128) cost 16.42 CPU-minutes before and 16.79 with it, ``prdarts_c10``'s step at
batch 64 1.73 s before and 1.82 s with it (``docs/results.md``, 2 cores of an Intel Xeon with AVX-512).
``benchmarks/bench_allocator.py`` times a step with and without it, side by side, at any batch size.

:func:`keep_freed_memory` tells glibc to serve every block from its heap (``M_MMAP_MAX = 0``) and never to trim
it (``M_TRIM_THRESHOLD``), the effect tcmalloc or jemalloc give through ``LD_PRELOAD``, with nothing to
install. The process's resident memory then stays at its peak instead of shrinking between steps. Elsewhere
(no glibc: macOS, Windows, musl) it does nothing and says so.
"""
import ctypes
import ctypes.util
import platform

__all__ = ['keep_freed_memory']

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # glibc <malloc.h>
_applied = False


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and keep freed memory (glibc ``mallopt``). Returns whether it applies
    (True on glibc, also when called again); affects the whole process, from the next allocation on."""
    global _applied
    if _applied:
        return True
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    _applied = bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                    and libc.mallopt(_M_TOP_PAD, 2**28))
    return _applied
