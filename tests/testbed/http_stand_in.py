"""The life cycle every HTTP stand-in of the test bed shares: a ThreadingHTTPServer on
127.0.0.1 (port 0: a free one) served from a daemon thread, usable as a context manager.

    class MyStandIn(HTTPStandIn):
        def __init__(self, **kw):
            super().__init__(self._handler(), **kw)   # a QuietHandler subclass

    with MyStandIn() as api:
        api.url  # http://127.0.0.1:<port>
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive, as the real services) and no request log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


class HTTPStandIn:
    def __init__(self, handler, *, host="127.0.0.1", port=0):
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
