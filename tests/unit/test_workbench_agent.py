"""A workbench's agent (probes/_workbench.py) and the host's end of it (matrix/backends/agent.py).

The agent is run for real here, in a process of its own on this machine's Python; the host's end
reads an engine's multiplexed stream, made by these tests frame by frame (the real engine's:
tests/integration/test_engine.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from matrix.backends import agent as host
from matrix.probing import probes_dir

STDOUT, STDERR = 1, 2


class Live:
    """The real agent in a process of its own, its stdin and stdout pipes of this test's."""

    def __init__(self, preexec_fn: Callable[[], None] | None = None, **env: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", str(probes_dir() / "_workbench.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **env},
                                     preexec_fn=preexec_fn)

    def ask(self, request: dict[str, object] | bytes) -> tuple[list[bytes], bytes]:
        """The answer's header (split) and the bytes after it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        head = self.proc.stdout.readline().split()
        size = int(head[2]) if head[1] == b"start" else int(head[2]) + int(head[3])
        return head, self.proc.stdout.read(size)

    def send(self, request: dict[str, object]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def answer(self) -> tuple[list[bytes], bytes]:
        """The next answer: its header (split) and the bytes after it."""
        assert self.proc.stdout is not None
        head = self.proc.stdout.readline().split()
        return head, self.proc.stdout.read(int(head[2]) + int(head[3]))

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


@pytest.fixture
def live() -> Iterator[Live]:
    agent = Live(FROM_CONTAINER="base")
    yield agent
    agent.proc.kill()
    agent.proc.wait()
    for pipe in (agent.proc.stdin, agent.proc.stdout):
        if pipe is not None:
            pipe.close()


def _subreaper() -> None:
    """In the agent's process before it starts: orphans of its commands come to it, as to a
    container's PID 1 (prctl PR_SET_CHILD_SUBREAPER, kept across exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def test_the_agent_answers_with_exit_code_and_each_streams_bytes(live: Live) -> None:
    head, body = live.ask({"id": "a1", "argv": ["sh", "-c", "printf out; printf 'err\\n' >&2; exit 7"]})
    assert (head, body) == ([b"a1", b"7", b"3", b"4"], b"outerr\n")
    big = live.ask({"id": "a2", "argv": [sys.executable, "-c", "import sys; sys.stdout.write('x' * 300000)"]})
    assert big == ([b"a2", b"0", b"300000", b"0"], b"x" * 300000)


def test_the_agent_adds_env_to_its_own_and_closes_stdin(live: Live) -> None:
    got = live.ask({"id": "e", "argv": ["sh", "-c", 'printf "%s %s" "$FROM_CONTAINER" "$ADDED"; cat'],
                    "env": {"ADDED": "x y"}})
    assert got == ([b"e", b"0", b"8", b"0"], b"base x y")


def test_a_signal_is_a_shells_status_and_a_program_that_cannot_start_is_said_so(live: Live) -> None:
    assert live.ask({"id": "k", "argv": ["sh", "-c", "kill -9 $$"]}) == ([b"k", b"137", b"0", b"0"], b"")
    head, words = live.ask({"id": "m", "argv": ["/no/such/program"]})
    assert head[:2] == [b"m", b"start"] and b"/no/such/program" in words


def test_a_request_that_is_not_one_is_answered_so_and_the_agent_goes_on(live: Live) -> None:
    head, words = live.ask(b"{not json\n")
    assert head[:2] == [b"-", b"start"] and words.startswith(b"not a request")
    assert live.ask({"id": "ok", "argv": ["true"]}) == ([b"ok", b"0", b"0", b"0"], b"")


def test_when_its_stdin_ends_the_agent_kills_the_command_under_way_and_ends(live: Live, tmp_path: Path) -> None:
    # The run that holds the workbench's stdin is gone: its install is not waited for.
    pid_file = tmp_path / "pid"
    assert live.proc.stdin is not None
    live.proc.stdin.write(json.dumps({"id": "s", "argv": ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]})
                          .encode() + b"\n")
    live.proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    sleeper = int(pid_file.read_text())
    assert live.close() == 0
    deadline = time.monotonic() + 10
    while Path(f"/proc/{sleeper}").exists() and time.monotonic() < deadline:  # killed (a zombie until reaped)
        if Path(f"/proc/{sleeper}/stat").read_text().split(") ")[-1].startswith("Z"):
            break
        time.sleep(0.02)
    else:
        assert not Path(f"/proc/{sleeper}").exists()


def test_the_agent_runs_commands_side_by_side_and_answers_each_when_it_is_through(live: Live, tmp_path: Path) -> None:
    go = tmp_path / "go"
    # The first waits for what the second does: one at a time, it would give up (exit 9).
    live.send({"id": "first", "argv": ["sh", "-c", f"i=0; while [ ! -e {go} ]; do i=$((i+1)); "
                                                   "[ $i -gt 1000 ] && exit 9; sleep 0.01; done; printf one"]})
    live.send({"id": "second", "argv": ["sh", "-c", f"touch {go}; printf two"]})
    assert live.answer() == ([b"second", b"0", b"3", b"0"], b"two")
    assert live.answer() == ([b"first", b"0", b"3", b"0"], b"one")


def test_the_agent_reaps_orphans_and_each_command_keeps_its_own_status() -> None:
    """As PID 1 the agent reaps what commands leave behind, while other commands run: none is
    left a zombie, and every command's status is its own. (A reap of any child, waitpid(-1), could
    take a command's status from the thread waiting for it, which would then read 0: the agent
    reaps only dead children that are no command under way. That race is too narrow for a test
    to force; this one fails when orphans are not reaped.)"""
    agent = Live(preexec_fn=_subreaper)
    proc = agent.proc
    try:
        n = 24
        for i in range(n):  # each leaves an orphan that dies a moment later, while others still run
            agent.send({"id": f"c{i}", "argv": ["sh", "-c", f"(sleep 0.0{i % 5} &); sleep 0.0{(i * 3) % 7}; "
                                                              f"exit {10 + i}"]})
        codes = {}
        for _ in range(n):
            head, _body = agent.answer()
            codes[head[0].decode()] = int(head[1])
        assert codes == {f"c{i}": 10 + i for i in range(n)}
        time.sleep(0.2)  # the last orphans dead: the next command's end reaps them
        agent.send({"id": "last", "argv": ["true"]})
        assert agent.answer() == ([b"last", b"0", b"0", b"0"], b"")
        time.sleep(0.1)
        zombies = [d for d in Path("/proc").iterdir() if d.name.isdigit() and _zombie_child(d, proc.pid)]
        assert zombies == []
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _zombie_child(d: Path, parent: int) -> bool:
    try:
        fields = d.joinpath("stat").read_bytes().rpartition(b")")[2].split()
    except OSError:
        return False
    return fields[0] == b"Z" and int(fields[1]) == parent


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
                    self.theirs.shutdown(socket.SHUT_RDWR)
                    return

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """The host's end goes first (the agent's end then reads the stream's end), then the agent's
        once its thread is through: closed under a recv of that thread, it failed the test that
        happened to be running (EBADF in the thread)."""
        self.ours.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        self.theirs.close()


@pytest.fixture
def stream() -> Iterator[type[Stream]]:
    made: list[Stream] = []

    def make(answer):  # type: ignore[no-untyped-def]
        s = Stream(answer)
        made.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in made:
        s.close()


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
    (lambda req: frame(STDOUT, f"{req['id']} start {host.MAX_OUTPUT}\n".encode()), "announced"),
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


def test_answers_that_come_in_another_order_go_each_to_its_own_caller(stream) -> None:  # type: ignore[no-untyped-def]
    def answer(req):  # type: ignore[no-untyped-def]
        if req["argv"] == ["slow"]:
            return b""  # answered with the next one's, after it
        slow = next(r for r in s.requests if r["argv"] == ["slow"])
        return (frame(STDOUT, f"{req['id']} 0 4 0\nfast".encode())
                + frame(STDOUT, f"{slow['id']} 3 4 1\nslow".encode()) + frame(STDOUT, b"!"))

    s = stream(answer)
    a = host.Agent(s.ours, silence_s=10)
    got: dict[str, tuple[int, bytes, bytes]] = {}
    slow = threading.Thread(target=lambda: got.update(slow=a.call(["slow"], {})))
    slow.start()
    while not s.requests:
        time.sleep(0.01)
    assert a.call(["fast"], {}) == (0, b"fast", b"")
    slow.join(10)
    assert got == {"slow": (3, b"slow", b"!")}


def test_a_lost_agent_fails_every_caller_waiting_on_it(stream) -> None:  # type: ignore[no-untyped-def]
    s = stream(lambda req: b"" if len(s.requests) < 2 else (frame(STDERR, b"gone\n"),))
    a = host.Agent(s.ours, silence_s=10)
    failed: list[str] = []

    def call() -> None:
        try:
            a.call(["x"], {})
        except host.AgentLost as e:
            failed.append(str(e))

    first = threading.Thread(target=call)
    first.start()
    while not s.requests:
        time.sleep(0.01)
    call()
    first.join(10)
    assert len(failed) == 2 and all("ended: gone" in f for f in failed)


def test_a_command_the_agent_could_not_start_is_its_own_error(stream) -> None:  # type: ignore[no-untyped-def]
    a = host.Agent(stream(lambda req: frame(STDOUT, f"{req['id']} start 9\nnot found".encode())).ours, silence_s=10)
    with pytest.raises(host.AgentCouldNotStart, match="not found"):
        a.call(["uv"], {})
    with pytest.raises(host.AgentCouldNotStart):  # the agent is not lost: it answered as asked
        a.call(["uv"], {})
