"""The host's end of a workbench's agent (probes/_workbench.py): a command is a request written to
the container's attached stdin, its result the agent's answer on the attached output, with no
engine exec (an exec costs the engine ~45 ms of CPU; an answer under a millisecond).

The attached stream is the engine's multiplexed one (the container has no TTY): frames of an
8-byte header (byte 0 the stream: 1 stdout, 2 stderr; bytes 4-7 the length, big-endian) and that
many bytes. The agent answers on its stdout: a header line naming the request, then exactly the
bytes it announced. Whatever else happens (the stream ends or falls silent, a line that is not the
answer to this request, more than the bounds) is AgentLost: the tool's world failed, never the
command's word; and the agent is lost for good, as what it says next cannot be trusted.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import threading

_FRAME = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
MAX_HEADER = 256  # an answer's header line, bytes
MAX_OUTPUT = 64 << 20  # a command's stdout or stderr, bytes
_TAIL = 2000  # the agent's own stderr kept for a message


class AgentLost(Exception):
    """The agent did not answer as asked (gone, silent, or saying something else)."""


class AgentCouldNotStart(Exception):
    """The agent answered that the command could not be started (no such program, say)."""


class Agent:
    """Requests to one agent, one at a time, over `sock` (its attach socket), each answered within
    `silence_s` of quiet on the stream."""

    def __init__(self, sock: socket.socket, silence_s: float) -> None:
        self.sock = sock
        self.silence_s = silence_s
        self._lock = threading.Lock()
        self._out = bytearray()  # the agent's stdout, read but not yet taken
        self._err = bytearray()  # the tail of the agent's own stderr (the words of its end)
        self._lost: str | None = None

    def call(self, argv: list[str], env: dict[str, str]) -> tuple[int, bytes, bytes]:
        """Run `argv` with `env` on top of the container's environment: its exit code, stdout and
        stderr. AgentLost when the answer is not that; AgentCouldNotStart with the agent's words."""
        rid = secrets.token_hex(8)
        request = json.dumps({"id": rid, "argv": argv, "env": env}).encode() + b"\n"
        with self._lock:
            if self._lost is not None:
                raise AgentLost(self._lost)
            try:
                self.sock.settimeout(self.silence_s)
                self.sock.sendall(request)
                header = self._line().decode("ascii", "replace").split()
                if len(header) == 3 and header[:2] == [rid, "start"] and header[2].isdigit():
                    if int(header[2]) > MAX_HEADER * 16:
                        raise AgentLost(f"the workbench's agent announced {header[2]} bytes of words")
                    raise AgentCouldNotStart(self._take(int(header[2])).decode("utf-8", "replace"))
                if len(header) != 4 or header[0] != rid or not all(h.lstrip("-").isdigit() for h in header[1:]):
                    raise AgentLost(f"the workbench's agent answered something else: {' '.join(header)[:100]!r}")
                code, out_n, err_n = (int(h) for h in header[1:])
                if min(out_n, err_n) < 0 or max(out_n, err_n) > MAX_OUTPUT:
                    raise AgentLost(f"the workbench's agent announced {out_n} + {err_n} bytes of output")
                return code, self._take(out_n), self._take(err_n)
            except AgentLost as e:
                self._lost = str(e)
                raise
            except OSError as e:  # socket.timeout included
                why = f"no answer for {self.silence_s:.0f} s" if isinstance(e, socket.timeout) else str(e)
                self._lost = f"the workbench's agent was lost: {why}"
                raise AgentLost(self._lost) from e

    def _line(self) -> bytes:
        while b"\n" not in self._out:
            if len(self._out) > MAX_HEADER:
                raise AgentLost(f"the workbench's agent wrote {len(self._out)} bytes that are no answer: "
                                f"{bytes(self._out[:100])!r}")
            self._frame()
        line, _, rest = bytes(self._out).partition(b"\n")
        self._out[:] = rest
        return line

    def _take(self, n: int) -> bytes:
        while len(self._out) < n:
            self._frame()
        taken = bytes(self._out[:n])
        del self._out[:n]
        return taken

    def _frame(self) -> None:
        kind, size = _FRAME.unpack(self._exactly(_FRAME.size))
        if size > MAX_OUTPUT:
            raise AgentLost(f"the engine's stream has a frame of {size} bytes")
        data = self._exactly(size)
        if kind == _STDOUT:
            self._out += data
        elif kind == _STDERR:
            self._err = (self._err + data)[-_TAIL:]
        else:
            raise AgentLost(f"the engine's stream has a frame of kind {kind}")

    def _exactly(self, n: int) -> bytes:
        got = bytearray()
        while len(got) < n:
            chunk = self.sock.recv(min(n - len(got), 1 << 20))
            if not chunk:
                words = bytes(self._err).decode("utf-8", "replace").strip().splitlines()
                raise AgentLost("the workbench's agent ended" + (f": {words[-1][:300]}" if words else ""))
            got += chunk
        return bytes(got)
