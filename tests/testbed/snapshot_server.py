#!/usr/bin/env python3
"""Real nginx (Debian nginx-light) serving snapshot archives like a Solana RPC node does.

Each server runs its own nginx master with its own prefix and config in a private directory
(not the system service), on 127.0.0.1:<port> (or another loopback address, ``host``: mirrors
that should count as different hosts, as aria2c counts ``-x`` connections per host name):

* files of ``root`` with byte ranges (``ranges=False`` sets ``max_ranges 0``: whole files only);
* ``/snapshot.tar.bz2`` and ``/incremental-snapshot.tar.bz2`` answer ``303`` with a Location
  naming the archive (``/snapshot-<slot>-<hash>.tar.zst``), as agave's RPC service does;
* ``limit_rate`` per connection (``rate``, e.g. ``"2m"``), the cap a busy node gives each stream.

    with NginxSnapshotServer(root, full="snapshot-1-H.tar.zst", rate="4m") as srv:
        srv.url  # http://127.0.0.1:<port>

Under CI=true a missing nginx is an error for the tests that need it (they fail, not skip).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

NGINX_PACKAGE = "nginx-light"  # Debian package the test bed installs

CONF = """\
{user}
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{ application/octet-stream zst lz4 bz2 gz tar; text/plain sha256; }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 10000;
    server {{
        listen {host}:{port};
        root {root};
        {limit_rate}
        {max_ranges}
{redirects}
        location / {{ try_files $uri =404; }}
    }}
}}
"""


def nginx_binary():
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def free_port(host="127.0.0.1"):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class NginxSnapshotServer:
    def __init__(
        self, root, *, full=None, incremental=None, rate=None, ranges=True, port=None, host="127.0.0.1"
    ):
        self.root = os.path.abspath(root)
        self.host = host
        self.full = full
        self.incremental = incremental
        self.rate = rate
        self.ranges = ranges
        self.port = port or free_port(host)
        self.prefix = None
        self.proc = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def config(self):
        redirects = []
        for path, name in (
            ("/snapshot.tar.bz2", self.full),
            ("/incremental-snapshot.tar.bz2", self.incremental),
        ):
            if name:
                redirects.append(f"        location = {path} {{ return 303 /{name}; }}")
        return CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            prefix=self.prefix,
            host=self.host,
            port=self.port,
            root=self.root,
            limit_rate=f"limit_rate {self.rate};" if self.rate else "",
            max_ranges="" if self.ranges else "max_ranges 0;",
            redirects="\n".join(redirects),
        )

    def start(self, timeout=10):
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError(f"nginx is not installed: apt-get install {NGINX_PACKAGE}")
        self.prefix = tempfile.mkdtemp(prefix="strata-nginx-")
        os.makedirs(os.path.join(self.prefix, "tmp"))
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as handle:
            handle.write(self.config())
        self.proc = subprocess.Popen(
            [binary, "-p", self.prefix, "-c", conf, "-e", os.path.join(self.prefix, "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on port {self.port} within {timeout} s")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: the master stops its workers
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.prefix:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
