"""The page cache, for the benchmarks that time reads from disk."""

import os


def drop_caches():
    """Writes dirty pages out and drops the page cache (root; the lab containers share this kernel).
    False where that is not allowed: the caller then says its reads were warm."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as handle:
            handle.write("3\n")
        return True
    except OSError:
        return False
