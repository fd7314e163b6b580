"""The installer steps of a cell: what `together` and `layered` mean as pip invocations.

Shared by every backend, so a mode means the same thing wherever it runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import posixpath
import re
import shlex
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from matrix.cells import Cell, install_order
from matrix.classify import Verdict
from matrix.errors import has_credentials as errors_has_credentials
from matrix.errors import redact as redact  # install.redact: where the backends import it from
from matrix.spec import Spec, canonical_name
from matrix.store import Outcome


class RunInstalls:
    """What one run has installed, for the installs of its cells.

    All of it is per base: a wheel is for one interpreter (numpy's cp311 wheel is not its cp312
    one), so a pin installed on py310 is new on py311 (there it would neither install offline nor
    be downloaded only once).

    - Two cells that install a pin nobody has installed yet on their base would both download it:
      the second waits for the first (then finds it in the package cache).
    - Two online installs on one base may both download the same dependency that is no pin (the
      numpy that two layered scipy steps pull): one base's online installs go one at a time.
      (The 800-cell growth benchmark, before both: 74 wheel downloads for 56 wheels, 1.25× the
      unique bytes; after: 1.03×.)
    - A cell whose pins have all been installed on its base in this run, or found to have no wheel
      there, or with one pin found to have none there, may resolve offline, from the index pages
      uv read for them minutes ago (0.1 s instead of 0.35 s through a proxy that lets nothing be
      cached, and not numpy's and scipy's 3 MB of pages again). A failure offline is tried again
      online, and only the online answer counts, but for what the pages alone decide
      (_settled_offline): online says the same, and the cell is spared three steps. Pages older
      than the run are never used that way.
    - Nor need a together or layered cell wait for any of that when every package its pins
      bring is one it pins: uv resolves each pin of a base alone online once in the run
      (`resolve`, resolve_command: its index pages and metadata read now, nothing installed),
      and when each pin's answer names only packages the cell pins, what the cell ends with is
      its pins and nothing else, whatever an offline install picks on the way (a layered cell's
      first step may take an older numpy from the cache than online would; its numpy step then
      replaces it). So such a cell installs offline at once, with no wait for another cell (an
      offline install downloads nothing); only when the cache lacks a wheel does it go online,
      as above. A pin that brings a package the cell does not pin (torch's sympy, say) keeps
      the cell on the way above: offline, an older sympy than online could stay.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._online: dict[str, threading.Lock] = {}
        self._done: set[tuple[str, str]] = set()
        # (base, pin) that this run's online installs found to have no wheel on that base.
        self._wheelless: set[tuple[str, str]] = set()
        # (base, pin) → the packages uv's online resolve of that pin alone brings (None: it failed),
        # and an event set once that resolve is through (a cell that needs it meanwhile waits).
        self._brings: dict[tuple[str, str], frozenset[str] | None] = {}
        self._resolving: dict[tuple[str, str], threading.Event] = {}

    @staticmethod
    def _pins(cell: Cell) -> list[tuple[str, str]]:
        return sorted((cell.base, f"{canonical_name(n)}=={v}") for n, v in cell.pins)

    @contextmanager
    def hold(self, cell: Cell) -> Iterator[bool]:
        """Wait for the first installs of the cell's pins on its base under way; yields whether the
        cell may try offline: every pin has been installed there in this run already or found to
        have no wheel there, or one of them has no wheel there (the cell may fail on it offline
        as it would online: a layered cell whose first step is that pin always does)."""
        with self._lock:
            new = [pin for pin in self._pins(cell) if pin not in self._done and pin not in self._wheelless]
            locks = [self._locks.setdefault(pin, threading.Lock()) for pin in new]
        for lock in locks:  # in one order for every cell: no two cells wait on each other
            lock.acquire()
        try:
            with self._lock:
                pins = self._pins(cell)
                seen = (all(pin in self._done or pin in self._wheelless for pin in pins)
                        or any(pin in self._wheelless for pin in pins))
            yield seen
        finally:
            for lock in locks:
                lock.release()

    def installed(self, cell: Cell) -> None:
        """The cell's pins were installed online on its base (with their dependencies' index pages)."""
        with self._lock:
            self._done.update(self._pins(cell))

    def _online_lock(self, base: str) -> threading.Lock:
        with self._lock:
            return self._online.setdefault(base, threading.Lock())

    def install(self, cell: Cell, attempt: Callable[[bool], Verdict | None], start_over: Callable[[], object],
                log: list[str], resolve: Callable[[str], str | None] | None = None) -> Verdict | None:
        """Install the cell with `attempt(offline)`, which returns the verdict of a failed step or None:
        offline first when the run knows all its pins on this base, online otherwise or after an
        offline failure (`start_over` clears what the offline attempt left). Both backends use this.

        `resolve(pin)`: uv's online resolve of that one requirement ("numpy==2.2.6") on the cell's
        base, its output (resolve_command), or None when it failed. Given, a together or layered
        cell whose pins bring only packages it pins goes offline at once (the class's docstring)."""
        if resolve is not None and cell.mode in ("together", "layered") and self._pinned_through(cell, resolve):
            log.append("# every package the pins bring is pinned here (uv, online, this run): offline\n")
            failed = attempt(True)
            if failed is None:
                return None
            if self._settled_offline(failed, cell):
                log.append(_SETTLED)
                return failed
            log.append(_ONLINE)  # a wheel not in the package cache, say
            start_over()
            with self.hold(cell):
                return self._install_online(cell, attempt)
        with self.hold(cell) as seen:
            failed = attempt(True) if seen else None
            if seen and failed is not None and self._settled_offline(failed, cell):
                log.append(_SETTLED)
                return failed
            if not seen or failed is not None:
                if seen:  # not all of it in the pages this run has read: as always, online
                    log.append(_ONLINE)
                    start_over()
                failed = self._install_online(cell, attempt)
        return failed

    def _install_online(self, cell: Cell, attempt: Callable[[bool], Verdict | None]) -> Verdict | None:
        """The online attempt, one per base at a time. Lock order: the pins' (hold), then the
        base's; the holder of this one waits on nothing."""
        with self._online_lock(cell.base):
            failed = attempt(False)
        if failed is None:
            self.installed(cell)
        else:
            self._note_wheelless(failed, cell)
        return failed

    def _pinned_through(self, cell: Cell, resolve: Callable[[str], str | None]) -> bool:
        """Whether every pin of the cell, resolved alone online in this run, brings only packages
        the cell pins."""
        pinned = {canonical_name(n) for n, _ in cell.pins}
        pins = [pin for _, pin in self._pins(cell)]
        for pin in pins[1:]:  # side by side: each is mostly waiting on the index
            threading.Thread(target=self._brought_quietly, args=(cell.base, pin, resolve), daemon=True,
                             name="compat-matrix-resolve").start()
        for pin in pins:
            brings = self._brought(cell.base, pin, resolve)
            if brings is None or not brings <= pinned:
                return False
        return True

    def _brought_quietly(self, base: str, pin: str, resolve: Callable[[str], str | None]) -> None:
        with contextlib.suppress(Exception):  # (not known: the cell installs as it would without)
            self._brought(base, pin, resolve)

    def _brought(self, base: str, pin: str, resolve: Callable[[str], str | None]) -> frozenset[str] | None:
        """The packages `pin` brings on `base` (itself too), by uv's online resolve of it alone,
        once per run; None when that failed or said something else than pins."""
        key = (base, pin)
        with self._lock:
            event = self._resolving.get(key)
            mine = event is None
            if mine:
                event = self._resolving[key] = threading.Event()
        assert event is not None
        if not mine:
            event.wait()
            with self._lock:
                return self._brings.get(key)
        brings = None
        try:
            out = resolve(pin)
            brings = None if out is None else resolved_packages(out)
        finally:
            with self._lock:
                self._brings[key] = brings
            event.set()
        return brings

    def _note_wheelless(self, verdict: Verdict, cell: Cell) -> None:
        pin = _wheelless_pin(verdict, cell)
        if pin is not None:
            with self._lock:
                self._wheelless.add((cell.base, pin))

    def _settled_offline(self, verdict: Verdict, cell: Cell) -> bool:
        """An offline failure that online would repeat: _settled_offline's conflict, or a pin without a
        wheel on this base that an online install of this run found to have none there."""
        if _settled_offline(verdict, cell):
            return True
        pin = _wheelless_pin(verdict, cell)
        with self._lock:
            return pin is not None and (cell.base, pin) in self._wheelless


_SETTLED = "# offline from this run's index pages: what they alone decide; as online\n"
_ONLINE = "# offline from this run's index pages: no; online\n"
# A line of `uv pip compile` with --no-annotate: a pinned distribution (an extra is not a package).
_RESOLVED = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==\S+$")


def resolved_packages(output: str) -> frozenset[str] | None:
    """The packages (canonical names) of a resolve_command's output; None when a line is not a pin
    (a URL, an extra, words): what it says is then not known to be only packages."""
    names = set()
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _RESOLVED.match(line)
        if m is None:
            return None
        names.add(canonical_name(m["name"]))
    return frozenset(names) or None


# uv's words for the simplest conflict: one pin's own requirement excludes another pin.
PIN_CONFLICT = re.compile(r"^Because (?P<a>[A-Za-z0-9._-]+)==(?P<av>\S+) depends on (?P<b>[A-Za-z0-9._-]+)"
                           r"[<>=!~,.*0-9A-Za-z+]* and you require (?P=b)==(?P<bv>[^\s,]+),")


def _settled_offline(verdict: Verdict, cell: Cell) -> bool:
    """An offline failure that online would repeat: one pin of the cell depends on a version of
    another that the cell pins otherwise. It rests on the metadata of that pin alone, which this
    run read online; any other failure offline may be something missing there (uv: "numpy was
    not found in the cache", "numpy==2.2.6 needs to be downloaded from a registry")."""
    m = PIN_CONFLICT.match(verdict.error)
    if verdict.outcome is not Outcome.RESOLVE_CONFLICT or m is None:
        return False
    pins = {(canonical_name(n), v) for n, v in cell.pins}
    text = verdict.error.lower()
    return ((canonical_name(m["a"]), m["av"]) in pins and (canonical_name(m["b"]), m["bv"]) in pins
            and not any(w in text for w in ("cache", "network", "offline", "download", "registry")))


# uv's words for a pin without a wheel for the interpreter ("has no usable wheels", "has no wheels
# with a matching Python ABI tag (e.g., `cp313`)"): the files the index page lists decide it.
NO_WHEEL_PIN = re.compile(r"^Because (?P<a>[A-Za-z0-9._-]+)==(?P<av>[^\s,]+) has no (?:usable )?wheels\b.*? "
                          r"and you require (?P=a)==(?P=av), we can conclude that your requirements are "
                          r"unsatisfiable\.$")


def _wheelless_pin(verdict: Verdict, cell: Cell) -> str | None:
    """The pin of the cell ("numpy==2.0.2", canonical name) that uv found no wheel of, when that is
    all the verdict says; None for anything else (a hint of the cache or the network: no answer)."""
    m = NO_WHEEL_PIN.match(verdict.error)
    if verdict.outcome is not Outcome.NO_WHEEL or m is None:
        return None
    pin = (canonical_name(m["a"]), m["av"])
    text = verdict.error.lower()
    if pin not in {(canonical_name(n), v) for n, v in cell.pins} or any(
            w in text for w in ("cache", "network", "offline", "download", "registry")):
        return None
    return f"{pin[0]}=={pin[1]}"


@dataclass(frozen=True)
class Step:
    # Arguments after `python -m pip`.
    args: tuple[str, ...]


def has_credentials(spec: Spec) -> bool:
    """Whether an index or link URL carries user:password@ (which must stay out of command lines)."""
    urls = [spec.install.index_url or "", *spec.install.extra_index_urls, *spec.install.find_links]
    return any(errors_has_credentials(u) for u in urls)


def uv_toml(spec: Spec, find_links: list[str]) -> str:
    """The index options as a uv configuration file (UV_CONFIG_FILE), for commands that must not
    show them: credentials in a URL stay off every command line, log and image."""
    lines = ["[pip]"]
    if spec.install.index_url:
        lines.append(f"index-url = {json.dumps(spec.install.index_url)}")
    lines.append(f"extra-index-url = {json.dumps(list(spec.install.extra_index_urls))}")
    lines.append(f"find-links = {json.dumps(find_links)}")
    return "\n".join(lines) + "\n"


# Writes a file with the interpreter of the cell's venv (so every backend, and a Dockerfile, can).
_WRITE = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"


def overrides_path(python: str) -> str:
    """Where an override cell's overrides file goes: in the venv whose interpreter is `python`."""
    return posixpath.join(posixpath.dirname(posixpath.dirname(python)), "compat-matrix-overrides.txt")


def uv_commands(cell: Cell, spec: Spec, uv: str, python: str, find_links: list[str], *,
                index_in_config: bool = False, offline: bool = False) -> list[list[str]]:
    """The cell's install steps as `uv pip` commands into the venv whose interpreter is `python`
    (what both backends run, and what `compat-matrix reproduce` prints); `offline`: from uv's
    cache only (see RunInstalls). An override cell first writes its pins as uv's overrides file."""
    out = []
    overrides = overrides_path(python) if cell.mode == "override" else None
    if overrides is not None:
        out.append([python, "-c", _WRITE, overrides, "".join(f"{r}\n" for r in cell.requirements())])
    for step in steps(cell, spec, find_links, index_in_config=index_in_config, overrides=overrides):
        verb, *opts = step.args
        out.append([uv, "pip", verb, *(["--offline"] if offline else []), "--python", python, *opts])
    return out


def resolve_command(cell: Cell, spec: Spec, uv: str, python: str, find_links: list[str], pin: str, *,
                    index_in_config: bool = False) -> list[str]:
    """uv resolving one pin of the cell alone, online, for `python`, with the options of the cell's
    installs, installing nothing (`uv pip compile`): its output, on stdout, is every package that
    pin brings, pinned (RunInstalls.install's `resolve`). A shell line: the requirement goes to
    uv on its standard input, which both backends close."""
    opts = options(spec, find_links, index_in_config=index_in_config) + source_options(cell, spec)
    compile_ = [uv, "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python", python, *opts, "-"]
    return ["sh", "-c", f"printf '%s\\n' {shlex.quote(pin)} | {shlex.join(compile_)}"]


def resolve_said(argv: list[str], exit_code: int | None, stdout: str, stderr: str, log: list[str]) -> str | None:
    """A resolve_command's output when it worked, else None; the cell's install log has the command
    either way, and uv's words when it did not (the cell then installs as it would without)."""
    log.append("$ " + argv[-1] + "\n")
    if exit_code != 0:
        log.append(f"# resolving online failed (exit code {exit_code}): installing as without it\n{stderr}")
        return None
    return stdout


def options(spec: Spec, find_links: list[str], *, index_in_config: bool = False) -> list[str]:
    """Installer options for every step; `find_links` as the installer will see them (with an
    as-of day, uv ignores what the indexes got later; local find-links wheels still count). With
    `index_in_config` the index and link options are left to a config file (uv_toml):
    on the command line pip would let them override the file's."""
    opts = []
    if spec.install.only_binary:
        opts.append("--only-binary=:all:")
    if spec.as_of is not None:  # the run's whole world as of that day, transitive requirements too
        opts += ["--exclude-newer", exclude_newer(spec.as_of)]
    if index_in_config:
        return opts
    if spec.install.index_url:
        opts += ["--index-url", spec.install.index_url]
    for url in spec.install.extra_index_urls:
        opts += ["--extra-index-url", url]
    for link in find_links:
        opts += ["--find-links", link]
    return opts


def source_options(cell: Cell, spec: Spec) -> list[str]:
    """The indexes of the axes the cell pins that have one (`torch: {versions: [...], index_url: ...}`),
    on the command line (they hold no credentials): uv searches an extra index before the default
    one, so those packages come from it (`2.4.1+cu121`, not PyPI's 2.4.1), as with pip's
    `--extra-index-url https://download.pytorch.org/whl/cu121`."""
    sources = dict(spec.sources)
    urls = dict.fromkeys(sources[name] for name, _ in cell.pins if name in sources)
    return [opt for url in urls for opt in ("--extra-index-url", url)]


def exclude_newer(as_of: dt.date) -> str:
    """uv's --exclude-newer for a run as of `as_of`: the start of the next day, UTC (RFC 3339),
    so the day itself counts, as it does for the specifier axes (index.pick)."""
    return (as_of + dt.timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")


def steps(cell: Cell, spec: Spec, find_links: list[str], *, index_in_config: bool = False,
          overrides: str | None = None) -> list[Step]:
    opts = options(spec, find_links, index_in_config=index_in_config) + source_options(cell, spec)
    if cell.mode == "together":
        return [Step(("install", *opts, *cell.requirements()))]
    if cell.mode == "override":
        # The bounds audit: the pins in one install, the packages' declared requirements on them
        # overridden (uv's --override with the pins): what runs when a resolver is not asked.
        if overrides is None:
            raise ValueError("an override cell's steps need the path of its overrides file")
        return [Step(("install", *opts, "--override", overrides, *cell.requirements()))]
    # layered: what a Dockerfile with one `RUN pip install` per package produces. The first step
    # resolves normally; every later one is forced over what is there (--no-deps), which is how a
    # later line silently replaces a numpy an earlier scipy was built against.
    out = []
    for i, (name, version) in enumerate(install_order(cell, spec)):
        force = ("--no-deps",) if i else ()
        out.append(Step(("install", *opts, *force, f"{name}=={version}")))
    return out
