"""Probers: a long-lived locked-down container per worker and base, into which each cell's probe
driver is exec'd, instead of a fresh container per cell.

A fresh container costs the engine about 0.25 s a cell (create, start, wait, logs, inspect,
remove); an exec into a running one a fraction of that. A prober is locked down as the one-shot
container is (engine.Sandbox: no network, read-only root, no capabilities, the memory and pids
limits, the package cache read-only), the driver and everything it starts run as nobody, and what
one cell leaves cannot touch the next one's verdict, because after every driver run CLEAN (one
exec, as nobody):

- kills every process it may (nobody's: not the container's init and idle command, which are
  root's, so a cell's processes cannot stop them either), until none is left but zombies the
  init reaps;
- empties /tmp and /dev/shm, the only places a cell can write;
- prints the container's count of OOM kills (cgroup v2 memory.events, v1 memory.oom_control).
  The engine's own OOMKilled flag stays set for the container's life once set; the count says
  whether this cell's run was the one that met the memory limit.

A driver that ends in order says the same itself (it reads the count when it starts and when its
probes are through: probes/_driver.py), in a record only it can write, and it does the clean-up
itself after its probes (told so by DRIVER_CLEANS), saying whether that left the prober clean and
the count then: the prober is free at once, with no exec for the clean-up (~45 ms of the engine's
CPU). When the driver could not clean up, CLEAN runs in the background while the worker goes on
to its next cell's install, and the prober is free again once it is clean. A driver that did not
end in order is judged on the clean-up's count.

Whatever goes wrong with a prober (a fault of the engine or of an exec, a clean-up that does not
leave it clean, a count that cannot be read, a driver killed from outside) ends that prober: it is
removed and the next cell gets a new one. An engine whose containers cannot read their count of
OOM kills gets no probers: each cell is probed in a one-shot container, as before.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from matrix.backends.engine import SANDBOX_USER, ContainerState, EngineFault, Sandbox, killed_from_outside
from matrix.probing import RunResult

# What a prober idles in: a shell reading its stdin, which the run's process holds (engine.start),
# so it ends when the run does, however the run ends. (A workbench runs its agent instead,
# probes/_workbench.py, which ends so too.)
IDLE = ["sh", "-c", "while read -r _; do :; done"]
# CLEAN exits 70 when processes would not die, 71 when files would not go, and this when the
# container cannot read its count of OOM kills.
_NO_COUNT = 72
CLEAN = r"""
me=$$; tries=0
while :; do
  left=0
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$me" ] && continue
    st=; { read -r st < "$d/stat"; } 2>/dev/null || continue
    case ${st##*) } in Z*) continue;; esac
    kill -9 "$p" 2>/dev/null && left=1
  done
  [ "$left" = 0 ] && break
  tries=$((tries + 1))
  [ "$tries" -lt 100 ] || { echo "processes of the last cell would not die" >&2; exit 70; }
  sleep 0.05 2>/dev/null
done
for dir in /tmp /dev/shm; do
  [ -d "$dir" ] || continue
  chmod -R u+rwx "$dir"/* "$dir"/.[!.]* "$dir"/..?* 2>/dev/null
  rm -rf "$dir"/* "$dir"/.[!.]* "$dir"/..?* 2>/dev/null
  for f in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
    if [ -e "$f" ] || [ -L "$f" ]; then echo "$f could not be removed" >&2; exit 71; fi
  done
done
for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
  [ -r "$f" ] || continue
  while read -r key value; do
    [ "$key" = oom_kill ] && { echo "oom_kill $value"; exit 0; }
  done < "$f"
done
echo "the container cannot read its count of OOM kills" >&2
exit 72
"""
_COUNT = re.compile(r"^oom_kill (\d+)$", re.MULTILINE)
# What a driver in a prober is told: clean the prober up after the probes (probes/_driver.py clean_up()).
DRIVER_CLEANS = {"COMPAT_MATRIX_PROBER": "1"}


class Engine(Protocol):
    def start(self, image: str, command: list[str], *, labels: dict[str, str], volumes: dict[str, str],
              sandbox: Sandbox | None = None) -> str: ...
    def exec(self, container: str, command: list[str], environment: dict[str, str] | None = None, *,
             user: str | None = None, timeout_s: float | None = None,
             on_timeout: Callable[[], object] | None = None, what: str = "") -> RunResult: ...
    def state(self, container: str) -> ContainerState: ...
    def remove(self, container: str) -> None: ...


@dataclass(frozen=True)
class Ending:
    """What a driver that ended in order says of its run: the OOM kills during it, and when it
    cleaned the prober up itself, the container's count of OOM kills after that."""

    oom_kills: int
    cleaned_at: int | None = None


class NoCount(Exception):
    """This engine's containers cannot read their count of OOM kills: no probers here."""


@dataclass
class Prober:
    container: str
    oom_kills: int  # the container's count of OOM kills after its last clean-up


class Probers:
    """The probers of one base in a run, each used by one cell at a time: one is started when a
    cell needs one and none is free or being cleaned (so at most one per worker), or ahead of
    need (prestart: while a worker's first install runs)."""

    def __init__(self, engine: Engine, image: str, *, labels: dict[str, str], volumes: dict[str, str],
                 sandbox: Sandbox) -> None:
        self.engine = engine
        self.image = image
        self.labels = labels
        self.volumes = volumes
        self.sandbox = sandbox
        self._ready = threading.Condition()
        self._free: list[Prober] = []
        self._pending = 0  # probers being started ahead of need or cleaned: soon free
        self.unsupported = False  # NoCount was raised once: every cell of the base goes one-shot

    def prestart(self) -> None:
        """Start a prober in the background, for a cell that will need one."""
        with self._ready:
            if self.unsupported:
                return
            self._pending += 1

        def start() -> None:
            prober = None
            try:
                prober = self._start()
            except (EngineFault, NoCount):
                pass  # the cell that needs a prober starts one, and meets the fault itself
            finally:
                self._done(prober)

        threading.Thread(target=start, name="compat-matrix-prober", daemon=True).start()

    def settle(self, timeout_s: float = 60.0) -> None:
        """Wait for the probers being started or cleaned in the background (at most `timeout_s`):
        the run's end must not close the engine under them (a clean-up that then fails removes its
        prober, which a --keep run leaves standing)."""
        with self._ready:
            self._ready.wait_for(lambda: not self._pending, timeout=timeout_s)

    def take_all(self) -> list[str]:
        """The free probers' containers, no longer handed out (the run is over: the caller removes
        them). Call after settle(): a prober still starting or being cleaned is left to the sweep by
        label."""
        with self._ready:
            free, self._free = self._free, []
        return [p.container for p in free]

    def run(self, command: list[str], environment: dict[str, str], timeout_s: float,
            counted: Callable[[RunResult], Ending | None]) -> tuple[RunResult, str]:
        """Run the driver `command` in a free prober, bounded by `timeout_s`, then clean up. Returns
        how it ended (oom_killed set) and the prober's container id. An EngineFault when the run
        is not the world's word; NoCount when the engine gives no probers.

        `counted`: what the driver said of its run when it ended in order, else None. Given, the
        driver's count of OOM kills says, and the prober is free at once when the driver cleaned it
        up, else after a clean-up in the background, off the cell's way; not given, the clean-up's
        count says, before the result is returned."""
        prober = self._take()
        try:
            ran = self.engine.exec(prober.container, command, {**environment, **DRIVER_CLEANS}, user=SANDBOX_USER,
                                   timeout_s=timeout_s, on_timeout=lambda: self._stop(prober.container),
                                   what="the probe driver")
            ending = counted(ran)
            if ending is not None:
                if ending.cleaned_at is not None and ending.cleaned_at >= prober.oom_kills:
                    prober.oom_kills = ending.cleaned_at
                    self._done(prober, pending=False)
                else:
                    self._clean_later(prober)
                return replace(ran, oom_killed=ending.oom_kills > 0), prober.container
            kills = self._count_after(prober.container)
        except BaseException:
            self.engine.remove(prober.container)
            raise
        oom = kills is None or kills > prober.oom_kills
        outside = not ran.timed_out and killed_from_outside(ran.exit_code, oom)
        if kills is None or outside:
            self.engine.remove(prober.container)
        else:
            prober.oom_kills = kills
            self._done(prober, pending=False)
        if outside:
            raise EngineFault(f"the probe driver was killed from outside its cell (exit code {ran.exit_code}, not "
                              "its memory limit): `docker kill` or the host's OOM killer")
        return replace(ran, oom_killed=oom), prober.container

    def _take(self) -> Prober:
        """A free prober: waits for one being started or cleaned; starts one when none is."""
        with self._ready:
            while not self._free and self._pending:
                self._ready.wait()
            if self._free:
                return self._free.pop()
        return self._start()

    def _done(self, prober: Prober | None, *, pending: bool = True) -> None:
        with self._ready:
            if prober is not None:
                self._free.append(prober)
            self._pending -= pending
            self._ready.notify_all()

    def _start(self) -> Prober:
        container = self.engine.start(self.image, IDLE, labels=self.labels, volumes=self.volumes,
                                      sandbox=self.sandbox)
        try:
            cleaned = self._clean(container)
            if cleaned.exit_code == _NO_COUNT:
                with self._ready:
                    self.unsupported = True
                raise NoCount(cleaned.stderr.strip())
            return Prober(container, _count(cleaned, container))
        except BaseException:
            self.engine.remove(container)
            raise

    def _clean(self, container: str) -> RunResult:
        """Run CLEAN in the prober (also what stops a driver that outran its limit)."""
        return self.engine.exec(container, ["sh", "-c", CLEAN], user=SANDBOX_USER, what="the prober's clean-up")

    def _stop(self, container: str) -> None:
        """The driver outran its limit: kill what runs in the prober (the clean-up does)."""
        try:
            self._clean(container)
        except EngineFault:
            pass  # the driver's exec then ends with the engine's fault, or at the patient client's limit

    def _clean_later(self, prober: Prober) -> None:
        """Clean the prober in the background; free again once clean, removed if it is not."""
        with self._ready:
            self._pending += 1

        def clean() -> None:
            clean = None
            try:
                prober.oom_kills = _count(self._clean(prober.container), prober.container)
                clean = prober
            except EngineFault:
                self.engine.remove(prober.container)
            finally:
                self._done(clean)

        threading.Thread(target=clean, name="compat-matrix-prober-clean", daemon=True).start()

    def _count_after(self, container: str) -> int | None:
        """Clean the prober after a driver run; the count of OOM kills it then reads. None: the
        container ended at its memory limit (which can take its init too) during the run."""
        try:
            cleaned = self._clean(container)
        except EngineFault:
            state = self.engine.state(container)
            if not state.running and state.oom_killed:
                return None
            raise
        return _count(cleaned, container)


def _count(cleaned: RunResult, container: str) -> int:
    found = _COUNT.findall(cleaned.stdout)
    if cleaned.exit_code != 0 or not found:
        why = (cleaned.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise EngineFault(f"cleaning prober {container[:12]} (exit code {cleaned.exit_code}): {why}")
    return int(found[-1])
