"""A real browser for the tests that look at a page as an operator would: Debian's chromium, run
headless (installed by tests/testbed/browser when missing).

Import the fixture with ``from .browser import *`` (pytest finds fixtures in the module namespace):

    chromium        module: the chromium binary; fails the test (never skips) when it cannot be had

Helpers: browse(chromium, path, *args) -> (stdout, stderr) of chromium --headless on file://path;
console_errors(stderr) what the page logged; png_pixels(path) -> (width, height, rows);
screenshots(chromium, html_path, out_dir, name) at SIZES (desktop 1280x800, phone 390x844).
"""

import os
import struct
import subprocess
import zlib

import pytest

from .conftest import REPO

__all__ = ["chromium"]  # the fixture; the helpers are imported by name

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, installed by tests/testbed/browser when missing. Never skipped: a page
    nobody looked at is not tested."""
    script = os.path.join(REPO, "tests", "testbed", "browser")
    proc = subprocess.run([script], capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        pytest.fail(
            "tests/testbed/browser could not provide chromium, so the report page cannot be checked "
            f"in a browser (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout.strip().splitlines()[-1]


def browse(chromium, path, *args):
    """chromium --headless on file://path; (stdout, stderr). Console messages go to stderr."""
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        "file://" + path,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium failed: {proc.stderr[-3000:]}"
    return proc.stdout, proc.stderr


def console_errors(stderr):
    """What the page itself logged: Chromium prints console messages as CONSOLE(line) and
    uncaught exceptions as 'Uncaught ...'; its own dbus and GPU chatter is not the page's."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def png_pixels(path):
    """(width, height, rows of (r, g, b)) of an 8-bit RGB/RGBA non-interlaced PNG (chromium's)."""
    with open(path, "rb") as handle:
        data = handle.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append([tuple(line[x * channels : x * channels + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def screenshots(chromium, html_path, out_dir, name):
    """Both window sizes; the paths, printed (pytest -s shows them; -rA too)."""
    shots = {}
    for label, (width, height) in SIZES.items():
        shot = os.path.join(out_dir, f"{name}-{label}-{width}x{height}.png")
        _out, err = browse(chromium, html_path, f"--screenshot={shot}", f"--window-size={width},{height}")
        assert console_errors(err) == [], console_errors(err)
        size = png_pixels(shot)[:2]
        assert size == (width, height), (shot, size)
        shots[label] = shot
        print(f"screenshot: {shot}")
    return shots
