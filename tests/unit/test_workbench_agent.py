"""A workbench's agent (probes/_workbench.py) and the host's end of it (matrix/backends/agent.py).

The agent is run for real here, on this machine's Python; the host's end reads an engine's
multiplexed stream, made by these tests frame by frame (the real engine's: tests/integration).
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from matrix.backends import agent as host
from probes import _workbench

STDOUT, STDERR = 1, 2


def serve(*requests: dict[str, object] | bytes) -> bytes:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in requests]
    out = io.BytesIO()
    _workbench.serve(iter(lines), out)
    return out.getvalue()


def test_the_agent_answers_with_exit_code_and_each_streams_bytes() -> None:
    got = serve({"id": "a1", "argv": ["sh", "-c", "printf out; printf 'err\\n' >&2; exit 7"]})
    assert got == b"a1 7 3 4\nouterr\n"


def test_the_agent_adds_env_to_its_own_and_closes_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_CONTAINER", "base")
    got = serve({"id": "e", "argv": ["sh", "-c", 'printf "%s %s" "$FROM_CONTAINER" "$ADDED"; cat'],
                 "env": {"ADDED": "x y"}})
    assert got == b"e 0 8 0\nbase x y"


def test_a_signal_is_a_shells_status_and_a_program_that_cannot_start_is_said_so() -> None:
    got = serve({"id": "k", "argv": ["sh", "-c", "kill -9 $$"]},
                {"id": "m", "argv": ["/no/such/program"]})
    first, rest = got.split(b"\n", 1)
    assert first == b"k 137 0 0"
    head, words = rest.split(b"\n", 1)
    assert head.split()[:2] == [b"m", b"start"] and int(head.split()[2]) == len(words)
    assert b"/no/such/program" in words


def test_a_request_that_is_not_one_is_answered_so_and_the_agent_goes_on() -> None:
    got = serve(b"{not json\n", {"id": "ok", "argv": ["true"]})
    head, rest = got.split(b"\n", 1)
    assert head.split()[:2] == [b"-", b"start"]
    assert rest[int(head.split()[2]):] == b"ok 0 0 0\n"


# The host's end, against a stream made here as the engine makes it.

def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(data)) + data


class Stream:
    """A socket pair: the agent's end answers each request with what `answer` makes of it (bytes;
    None: the stream ends; a tuple: its bytes, then the end)."""

    def __init__(self, answer) -> None:  # type: ignore[no-untyped-def]
        self.ours, self.theirs = socket.socketpair()
        self.requests: list[dict[str, object]] = []

        def run() -> None:
            buf = b""
            while True:
                data = self.theirs.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    request = json.loads(line)
                    self.requests.append(request)
                    reply = answer(request)
                    if isinstance(reply, bytes):
                        self.theirs.sendall(reply)
                        continue
                    if reply is not None:  # (last words, then the end)
                        self.theirs.sendall(reply[0])
                    self.theirs.close()
                    return

        threading.Thread(target=run, daemon=True).start()


@pytest.fixture
def stream() -> Iterator[type[Stream]]:
    made: list[Stream] = []

    def make(answer):  # type: ignore[no-untyped-def]
        s = Stream(answer)
        made.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in made:
        s.ours.close()
        s.theirs.close()


def test_the_host_reads_an_answer_in_frames_of_any_size_and_the_agents_stderr_aside(stream) -> None:  # type: ignore[no-untyped-def]
    def answer(req):  # type: ignore[no-untyped-def]
        text = f"{req['id']} 1 5 3\nhello".encode()
        pieces = [frame(STDOUT, text[i:i + 2]) for i in range(0, len(text), 2)]
        return frame(STDERR, b"agent noise\n") + b"".join(pieces) + frame(STDOUT, b"err")

    s = stream(answer)
    a = host.Agent(s.ours, silence_s=10)
    assert a.call(["uv", "pip"], {"K": "V"}) == (1, b"hello", b"err")
    assert s.requests[0]["argv"] == ["uv", "pip"] and s.requests[0]["env"] == {"K": "V"}
    assert a.call(["again"], {}) == (1, b"hello", b"err")


@pytest.mark.parametrize(("reply", "words"), [
    (lambda req: frame(STDOUT, b"0123456789abcdef 0 0 0\n"), "answered something else"),  # another request's
    (lambda req: frame(STDOUT, f"{req['id']} 0 {host.MAX_OUTPUT + 1} 0\n".encode()), "announced"),
    (lambda req: frame(STDOUT, b"x" * (host.MAX_HEADER + 10)), "no answer"),
    (lambda req: frame(3, b"?"), "frame of kind 3"),
    (lambda req: None, "agent ended"),
])
def test_anything_but_the_answer_loses_the_agent_for_good(stream, reply, words: str) -> None:  # type: ignore[no-untyped-def]
    a = host.Agent(stream(reply).ours, silence_s=10)
    with pytest.raises(host.AgentLost, match=words):
        a.call(["true"], {})
    with pytest.raises(host.AgentLost, match=words):  # what it says next cannot be trusted
        a.call(["true"], {})


def test_an_agent_that_ends_says_its_last_words_and_one_that_is_silent_is_lost(stream) -> None:  # type: ignore[no-untyped-def]
    s = stream(lambda req: (frame(STDERR, b"Traceback (most recent call last):\nSyntaxError: invalid syntax\n"),))
    a = host.Agent(s.ours, silence_s=10)
    with pytest.raises(host.AgentLost, match="ended: SyntaxError: invalid syntax"):
        a.call(["true"], {})
    quiet = host.Agent(stream(lambda req: b"").ours, silence_s=0.2)
    with pytest.raises(host.AgentLost, match="no answer for 0 s"):
        quiet.call(["true"], {})


def test_a_command_the_agent_could_not_start_is_its_own_error(stream) -> None:  # type: ignore[no-untyped-def]
    a = host.Agent(stream(lambda req: frame(STDOUT, f"{req['id']} start 9\nnot found".encode())).ours, silence_s=10)
    with pytest.raises(host.AgentCouldNotStart, match="not found"):
        a.call(["uv"], {})
    with pytest.raises(host.AgentCouldNotStart):  # the agent is not lost: it answered as asked
        a.call(["uv"], {})
