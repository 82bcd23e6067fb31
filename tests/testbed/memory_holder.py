"""A process whose memory a checkpoint must carry: SIZE bytes that all differ, part of them hot.

    python3 memory_holder.py SIZE_BYTES [--hot-every N [--scattered]] [--checksum-file PATH]

Fills SIZE bytes (whole 64 MiB chunks) from one random 64 MiB block, rotated per chunk by a
non-page-aligned offset, so every page differs and none is a zero page; prints "ready". With
--hot-every N it then writes one byte of each page of every Nth 2 MiB block over and over (N=20:
5 % of the pages, what a running job keeps changing while a pre-dump copies the rest). The hot
pages come in whole 2 MiB blocks, aligned: with transparent huge pages (Debian's kernel: "always")
the kernel tracks a huge page's dirtiness as one, so one written byte in every 20th 4 KiB page
would mark every huge page dirty - which --scattered does on purpose (the hot pages are then every
Nth 4 KiB page). SIGUSR1 writes the sha256 of the cold pages (the ones never written after the
fill) to the checksum file, then "checked" to stdout: a restored holder proves its memory came
back whole.
"""

import argparse
import ctypes
import hashlib
import mmap
import os
import signal
import time

CHUNK = 64 << 20
PAGE = mmap.PAGESIZE
BLOCK = 2 << 20  # an x86-64 huge page


def fill(size):
    block = memoryview(os.urandom(CHUNK))
    mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for index, offset in enumerate(range(0, size, CHUNK)):
        rotation = (index * 4099 + 17) % CHUNK  # every page's content differs, none is zero
        head = CHUNK - rotation
        mem[offset : offset + head] = block[rotation:]
        mem[offset + head : offset + CHUNK] = block[:rotation]
    return mem


def hot_pages(mem, hot_every, scattered=False):
    """Offsets of the hot pages: every page of every hot_every-th 2 MiB block of the mapping,
    counted from the first block boundary in it (scattered: every hot_every-th page)."""
    if not hot_every:
        return []
    if scattered:
        return list(range(0, len(mem), hot_every * PAGE))
    address = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    first = (-address) % BLOCK
    blocks = range(first, len(mem) - BLOCK + 1, BLOCK * hot_every)
    return [block + page for block in blocks for page in range(0, BLOCK, PAGE)]


def cold_checksum(mem, hot):
    digest = hashlib.sha256()
    view = memoryview(mem)
    hot = set(hot)
    for offset in range(0, len(mem), PAGE):
        if offset not in hot:
            digest.update(view[offset : offset + PAGE])
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("size", type=int)
    parser.add_argument("--hot-every", type=int, default=0)
    parser.add_argument("--scattered", action="store_true")
    parser.add_argument("--checksum-file")
    args = parser.parse_args()
    mem = fill(max(CHUNK, args.size // CHUNK * CHUNK))
    hot = hot_pages(mem, args.hot_every, args.scattered)

    def report_checksum(_signum, _frame):
        with open(args.checksum_file, "w") as handle:
            handle.write(cold_checksum(mem, hot))
        print("checked", flush=True)

    signal.signal(signal.SIGUSR1, report_checksum)
    print(f"ready {len(hot)} hot pages", flush=True)
    while True:
        for offset in hot:
            mem[offset] = (mem[offset] + 1) & 0xFF
        time.sleep(0.01 if hot else 3600)


if __name__ == "__main__":
    main()
