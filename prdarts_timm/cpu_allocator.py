"""Keep freed memory in the process on the CPU, so a training step does not page-fault its activations in anew.

glibc's ``malloc`` serves every block above 32 MiB (a batch's activations: 100 MB for one 256 x 96 x 32 x 32
float tensor) with a fresh ``mmap`` and gives it back to the kernel when it is freed, so each step touches its
activations' pages for the first time again: every element-wise kernel (ReLU, BatchNorm, adds) then runs at the
speed of page faults. Measured on 2 cores of an Intel Xeon (family 6 model 207, Emerald Rapids, under KVM), ``prdarts_c10_micro``'s
training step at batch 256: 4.36 s with glibc's defaults, 2.61 s with the settings below (1.67x), a bare ReLU of
such a tensor 38 ms against 11 ms into memory already touched (``docs/results.md``).

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
