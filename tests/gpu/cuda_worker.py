"""A process whose state lives in device memory: a known pattern and a counter that goes on.

    cuda_worker.py --gib N --status FILE [--device cuda|cpu]

With --device cuda (PyTorch) it fills N GiB of GPU memory with a pattern (chunk i holds the
value PATTERN(i) in every int32), then loops: one small GPU reduction per step (so a CUDA lock
stops the loop), the step counter in host memory, and every VERIFY_EVERY steps a full compare of
the pattern on the GPU. Each step rewrites FILE as JSON: pid, count, time, pattern_ok, the count
at which the pattern was last checked, and identity and ready_at (drawn at start and kept in
memory: a restored process has the dumped one's). With --device cpu the pattern
lives in host memory (the self-test of tests/gpu/run on machines without a GPU, which also maps
the fake libcuda so that the module sees a CUDA process).
"""

import argparse
import ctypes
import json
import os
import time

CHUNKS = 64
VERIFY_EVERY = 25


def pattern(i):
    return (i * 7919 + 17) % (2**31 - 1)


class CudaPattern:
    def __init__(self, gib):
        import torch  # noqa: PLC0415 - only on the GPU machine

        self.torch = torch
        elems = (gib << 30) // 4 // CHUNKS
        self.data = torch.empty((CHUNKS, elems), dtype=torch.int32, device="cuda")
        for i in range(CHUNKS):
            self.data[i].fill_(pattern(i))
        torch.cuda.synchronize()

    def touch(self, count):
        # A kernel launch plus a device-to-host copy: blocks while CUDA is locked.
        return int(self.data[count % CHUNKS, :4096].sum().item())

    def verify(self):
        return all(bool((self.data[i] == pattern(i)).all().item()) for i in range(CHUNKS))


class CpuPattern:
    def __init__(self, gib):
        size = int(gib * (1 << 30)) // CHUNKS
        self.chunks = [bytearray([pattern(i) % 251]) * size for i in range(CHUNKS)]

    def touch(self, count):
        return self.chunks[count % CHUNKS][0]

    def verify(self):
        return all(chunk == bytearray([pattern(i) % 251]) * len(chunk) for i, chunk in enumerate(self.chunks))


class StatusFile:
    """FILE, open for the whole run and always STATUS_BYTES long.

    A dump can come at any step, and CRIU restores an open file only where it is found at the
    same path with the size it had at the dump (criu/files-reg.c): a temporary file renamed
    away after the dump, or a status that grew, would fail the restore. One open file rewritten
    in place at a fixed size is always there as dumped. Readers retry a torn read (not JSON).
    """

    STATUS_BYTES = 4096

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self.fd, self.STATUS_BYTES)

    def write(self, status):
        record = json.dumps(status).encode()
        if len(record) >= self.STATUS_BYTES:
            raise ValueError(f"status of {len(record)} bytes does not fit in {self.STATUS_BYTES}")
        os.pwrite(self.fd, record.ljust(self.STATUS_BYTES - 1) + b"\n", 0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--load-library", help="self-test: map this library, as a CUDA process maps libcuda")
    args = parser.parse_args()
    if args.load_library:
        ctypes.CDLL(args.load_library)
    memory = CudaPattern(int(args.gib)) if args.device == "cuda" else CpuPattern(args.gib)
    status = {
        "pid": os.getpid(),
        "device": args.device,
        "gib": args.gib,
        "count": 0,
        "identity": os.urandom(8).hex(),
    }
    status.update(pattern_ok=memory.verify(), verified_at=0, ready_at=time.time())
    status_file = StatusFile(args.status)
    while True:
        status["count"] += 1
        memory.touch(status["count"])
        if status["count"] % VERIFY_EVERY == 0:
            status.update(pattern_ok=memory.verify(), verified_at=status["count"])
        status["time"] = time.time()
        status_file.write(status)
        time.sleep(0.01)


if __name__ == "__main__":
    main()
