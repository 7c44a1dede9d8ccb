"""Process plumbing: the allocator setting the engine applies at start."""

from __future__ import annotations

import platform
import subprocess
import sys

from technic_stream.app.runtime import keep_freed_memory

# run in a fresh interpreter: the engine tests apply the setting to the test process
_PROBE = r"""
import ctypes, ctypes.util
from technic_stream.app.runtime import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2

def mapped_by(size):
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    after = libc.mallinfo2().hblkhd
    libc.free(block)
    return after - before

default = mapped_by(48 << 20)
applied = keep_freed_memory(128)
print(default, applied, mapped_by(48 << 20), mapped_by(80 << 20))
"""


def test_zero_leaves_the_allocator_as_it_is():
    assert keep_freed_memory(0) is False


def test_a_batch_sized_block_comes_from_the_heap_not_a_fresh_mapping():
    if platform.libc_ver()[0] != "glibc":
        assert keep_freed_memory(128) is False  # mallopt is glibc's: off it, nothing applies
        return
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()  # fmt: skip
    default, applied, under, over = int(out[0]), out[1], int(out[2]), int(out[3])
    assert default >= 48 << 20  # glibc's own: a fresh mapping (its threshold tops at 32 MB)
    assert applied == "True"
    assert under == 0  # under the new threshold (64 MB): from the heap
    assert over >= 80 << 20  # over it: mapped, as before
