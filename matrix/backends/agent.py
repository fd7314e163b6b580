"""The host's end of a workbench's agent (probes/_workbench.py): a command is a request written to
the container's attached stdin, its result the agent's answer on the attached output, with no
engine exec (an exec costs the engine ~45 ms of CPU; an answer under a millisecond).

The attached stream is the engine's multiplexed one (the container has no TTY): frames of an
8-byte header (byte 0 the stream: 1 stdout, 2 stderr; bytes 4-7 the length, big-endian) and that
many bytes. The agent answers on its stdout: a header line naming the request, then exactly the
bytes it announced; it runs the commands of several requests side by side, and answers each when
its command is through. Whatever else happens (the stream ends or falls silent, a line that is not
the answer to a request awaited, more than the bounds) is AgentLost: the tool's world failed, never the
command's word; and the agent is lost for good, as what it says next cannot be trusted.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import threading
from typing import NoReturn

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
    """Requests to one agent over `sock` (its attach socket), side by side: each caller's answer is
    read by whichever caller is reading the stream at the time, and handed to its own (the reader
    is one of the callers waiting, the next one when it has its own answer). The stream falling
    quiet for `silence_s` while answers are awaited loses the agent."""

    def __init__(self, sock: socket.socket, silence_s: float) -> None:
        self.sock = sock
        self.silence_s = silence_s
        sock.settimeout(silence_s)
        self._send = threading.Lock()  # one request written at a time
        self._state = threading.Condition()  # what follows, and a caller's wait for its answer
        self._awaited: set[str] = set()  # the requests sent and not yet answered
        self._answers: dict[str, tuple[int, bytes, bytes] | AgentCouldNotStart] = {}
        self._reading = False  # a caller is reading the stream
        self._out = bytearray()  # the agent's stdout, read but not yet taken (the reader's)
        self._err = bytearray()  # the tail of the agent's own stderr (the words of its end)
        self._lost: str | None = None

    def call(self, argv: list[str], env: dict[str, str]) -> tuple[int, bytes, bytes]:
        """Run `argv` with `env` on top of the container's environment: its exit code, stdout and
        stderr. AgentLost when the answer is not that; AgentCouldNotStart with the agent's words."""
        rid = secrets.token_hex(8)
        request = json.dumps({"id": rid, "argv": argv, "env": env}).encode() + b"\n"
        with self._state:
            if self._lost is not None:
                raise AgentLost(self._lost)
            self._awaited.add(rid)
        try:
            with self._send:
                self.sock.sendall(request)
        except OSError as e:
            self._lose(e)
        with self._state:
            while rid not in self._answers:
                if self._lost is not None:
                    raise AgentLost(self._lost)
                if not self._reading:
                    self._reading = True
                    break
                self._state.wait()
        if rid not in self._answers:
            try:
                self._read_until(rid)
            finally:
                with self._state:
                    self._reading = False
                    self._state.notify_all()
        with self._state:
            answer = self._answers.pop(rid)
        if isinstance(answer, AgentCouldNotStart):
            raise answer
        return answer

    def _read_until(self, rid: str) -> None:
        """Read answers off the stream, each to its caller, until `rid`'s is among them."""
        try:
            while True:
                got, answer = self._answer()
                with self._state:
                    self._answers[got] = answer
                    self._awaited.discard(got)
                    self._state.notify_all()
                if got == rid:
                    return
        except AgentLost as e:
            with self._state:
                self._lost = str(e)
                self._state.notify_all()
            raise
        except OSError as e:  # socket.timeout included
            self._lose(e)

    def _lose(self, e: OSError) -> NoReturn:
        why = f"no answer for {self.silence_s:.0f} s" if isinstance(e, socket.timeout) else str(e)
        with self._state:
            self._lost = self._lost or f"the workbench's agent was lost: {why}"
            self._state.notify_all()
            raise AgentLost(self._lost) from e

    def _answer(self) -> tuple[str, tuple[int, bytes, bytes] | AgentCouldNotStart]:
        """The next answer on the stream, and whose it is: AgentLost when it is not one to a
        request awaited."""
        header = self._line().decode("ascii", "replace").split()
        with self._state:
            awaited = bool(header) and header[0] in self._awaited
        if len(header) == 3 and awaited and header[1] == "start" and header[2].isdigit():
            if int(header[2]) > MAX_HEADER * 16:
                raise AgentLost(f"the workbench's agent announced {header[2]} bytes of words")
            return header[0], AgentCouldNotStart(self._take(int(header[2])).decode("utf-8", "replace"))
        if len(header) != 4 or not awaited or not all(h.lstrip("-").isdigit() for h in header[1:]):
            raise AgentLost(f"the workbench's agent answered something else: {' '.join(header)[:100]!r}")
        code, out_n, err_n = (int(h) for h in header[1:])
        if min(out_n, err_n) < 0 or max(out_n, err_n) > MAX_OUTPUT:
            raise AgentLost(f"the workbench's agent announced {out_n} + {err_n} bytes of output")
        return header[0], (code, self._take(out_n), self._take(err_n))

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
