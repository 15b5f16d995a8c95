"""A Range-capable HTTP server on loopback, in a thread (shared by the download and pretrained tests)."""

from __future__ import annotations

import http.server
import threading
import time


class LoopbackServer:
    """Serves one in-memory file at any path; honours 'Range: bytes=N-'; can cut a response short."""

    def __init__(self, body: bytes):
        self.body = body
        self.requests = []  # (path, Range header)
        self.cut_after = None  # serve only this many bytes of the next full response, then drop
        self.delay_s = 0.0  # wait this long before each response's body (a slow server)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                data = outer.body[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.body) - 1}/{len(outer.body)}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                time.sleep(outer.delay_s)
                if outer.cut_after is not None and not rng:
                    self.wfile.write(data[: outer.cut_after])
                    outer.cut_after = None
                    return  # the client sees fewer bytes than Content-Length
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
