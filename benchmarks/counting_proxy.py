"""A byte-counting HTTP CONNECT proxy for the benchmarks: what each host sent, wheels (the wheel
host) told from index pages (the index host), where the machine's received bytes mix both with
whatever else the machine does."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter

WHEEL_HOST = "files.pythonhosted.org"
INDEX_HOST = "pypi.org"


class CountingProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 that counts, per host, the bytes the far end sends back.

    The TLS inside the tunnel is untouched (uv verifies the index's certificate as always); only
    its length is counted, so a host's figure is its payload plus a little TLS framing."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, name="counting-proxy", daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def environ(self, env: dict[str, str]) -> dict[str, str]:
        """`env` with HTTPS traffic (uv's, the tool's index reads) sent through this proxy."""
        out = {k: v for k, v in env.items() if k not in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")}
        return dict(out, HTTPS_PROXY=self.url, https_proxy=self.url)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            request, _, rest = head.partition(b"\r\n\r\n")
            words = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(words) < 2 or words[0] != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = words[1].rpartition(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=60)
            except (OSError, ValueError):
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                upstream.settimeout(None)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                up = threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True)
                up.start()
                self._pipe(upstream, client, host)
                up.join()

    def _pipe(self, src: socket.socket, dst: socket.socket, host: str | None) -> None:
        try:
            while True:
                data = src.recv(1 << 18)
                if not data:
                    break
                dst.sendall(data)
                if host is not None:
                    with self._lock:
                        self.received[host] += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
