"""The sweep loop: retries of infra errors, a full disk stops it, one cell's bug is that cell's."""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from matrix.cells import Cell
from matrix.errors import Cancelled
from matrix.resultcache import ResultCache
from matrix.spec import Base
from matrix.store import Outcome, Record, load_records
from matrix.sweep import _Pending, sweep

CELLS = tuple(Cell("b", "together", (("numpy", v),)) for v in ("1.0", "2.0", "3.0"))


class ScriptedBackend:
    """Answers each run_cell with the next scripted outcome: the faults a real index or disk
    will not produce on demand."""

    name = "scripted"

    def __init__(self, script: list[tuple[Outcome, str] | Exception]) -> None:
        self.script = list(script)
        self.calls: list[str] = []

    def start(self) -> list[str]:
        return []

    def skip_reason(self, base: Base) -> str | None:
        return None

    def close(self, *, interrupted: bool) -> None:
        pass

    def cancel(self) -> None:
        pass

    def idle(self) -> None:
        pass

    def settled(self, timeout_s: float) -> None:
        pass

    def base_id(self, base: Base) -> str:
        return ""

    def run_cell(self, cell: Cell, log_dir: Path) -> Record:
        assert log_dir.is_dir()
        self.calls.append(cell.id)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        outcome, error = step
        return Record(cell=cell.id, base=cell.base, mode=cell.mode, pins=cell.pin_dict, outcome=outcome, error=error)


def test_infra_errors_are_retried_with_growing_waits(tmp_path: Path) -> None:
    flaky = (Outcome.INFRA_ERROR, "Read timed out")
    backend = ScriptedBackend([flaky, flaky, (Outcome.PASS, ""), (Outcome.PASS, ""), (Outcome.NO_WHEEL, "x")])
    waits: list[float] = []
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, retry_waits=(1.0, 5.0), sleep=waits.append)
    assert waits == [1.0, 5.0]
    assert [r.outcome for r in result.records] == [Outcome.PASS, Outcome.PASS, Outcome.NO_WHEEL]
    assert load_records(tmp_path / "runs" / "r1.jsonl") == result.records


def test_a_failure_that_outlived_its_retries_is_not_retried_again(tmp_path: Path) -> None:
    gone = (Outcome.INFRA_ERROR, "base image x is not on the engine and could not be pulled")
    backend = ScriptedBackend([gone] * 3 + [gone, gone])
    waits: list[float] = []
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, retry_waits=(1.0, 5.0), sleep=waits.append)
    assert waits == [1.0, 5.0]  # only the first cell waited
    assert [r.outcome for r in result.records] == [Outcome.INFRA_ERROR] * 3


@pytest.mark.parametrize("said", ["OSError: [Errno 28] No space left on device",
                                  "the engine: write /var/lib/docker/tmp/x: no space left on device"])
def test_a_full_disk_stops_the_sweep(tmp_path: Path, said: str) -> None:
    full = (Outcome.INFRA_ERROR, said)
    backend = ScriptedBackend([(Outcome.PASS, ""), full])
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, sleep=lambda _: None)
    assert len(result.records) == 2 and backend.calls == [CELLS[0].id, CELLS[1].id]
    assert result.stopped and "No space left on device" in result.stopped


def test_an_exception_in_one_cell_is_that_cells_infra_error(tmp_path: Path) -> None:
    backend = ScriptedBackend([(Outcome.PASS, ""), RuntimeError("bug"), RuntimeError("bug"), RuntimeError("bug"),
                               (Outcome.PASS, "")])
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, sleep=lambda _: None)
    assert [r.outcome for r in result.records] == [Outcome.PASS, Outcome.INFRA_ERROR, Outcome.PASS]
    assert result.records[1].error == "RuntimeError: bug"


def test_progress_shows_done_total_current_cell_and_eta(tmp_path: Path) -> None:
    lines: list[str] = []
    backend = ScriptedBackend([(Outcome.PASS, "")] * 3)
    sweep(CELLS, backend, tmp_path, "r1", echo=lines.append, sleep=lambda _: None)
    starts = [ln for ln in lines if ln.startswith("[")]
    assert starts[0] == f"[1/3] {CELLS[0].id} ..."
    assert starts[2].startswith(f"[3/3] {CELLS[2].id} ... (about ") and starts[2].endswith("s left)")


class BarrierBackend(ScriptedBackend):
    """Each cell waits until `width` cells are in run_cell at once: it can only pass when the sweep
    really runs that many side by side (no timing involved)."""

    def __init__(self, width: int) -> None:
        super().__init__([])
        self.barrier = threading.Barrier(width, timeout=20)
        self.cancelled = False

    def run_cell(self, cell: Cell, log_dir: Path) -> Record:
        self.barrier.wait()
        return Record(cell=cell.id, base=cell.base, mode=cell.mode, pins=cell.pin_dict, outcome=Outcome.PASS)


def test_the_work_done_meanwhile_waits_for_the_backend_to_settle(tmp_path: Path) -> None:
    """`meanwhile` (the table writer's import) runs only once the backend says its start-up is
    through, so the two do not share the interpreter while the first cell waits for it."""
    said: list[str] = []
    settle = threading.Event()

    class Settling(ScriptedBackend):
        def settled(self, timeout_s: float) -> None:
            assert 0 < timeout_s <= 60
            settle.wait(20)
            said.append("settled")

        def run_cell(self, cell: Cell, log_dir: Path) -> Record:
            if cell == CELLS[0]:
                assert said == []  # the backend has not settled: nothing ran meanwhile
                settle.set()
                for _ in range(2000):
                    if "meanwhile" in said:
                        break
                    threading.Event().wait(0.01)
            return super().run_cell(cell, log_dir)

    sweep(CELLS[:2], Settling([(Outcome.PASS, "")] * 2), tmp_path, "r1", echo=lambda _: None,
          meanwhile=lambda: said.append("meanwhile"))
    assert said == ["settled", "meanwhile"]


def test_jobs_run_cells_side_by_side_and_keep_every_record(tmp_path: Path) -> None:
    cells = tuple(Cell("b", mode, (("numpy", v),)) for v in ("1.0", "2.0") for mode in ("together", "layered"))
    lines: list[str] = []
    result = sweep(cells, BarrierBackend(2), tmp_path, "r1", echo=lines.append, jobs=2)
    assert sorted(r.cell for r in result.records) == sorted(c.id for c in cells)
    assert all(r.outcome is Outcome.PASS for r in result.records)
    assert sorted(r.cell for r in load_records(tmp_path / "runs" / "r1.jsonl")) == sorted(c.id for c in cells)
    # two at a time, one mode's cells first (layered): the cells that differ only by mode are never side by side
    started = [ln.split()[-2] if ln.endswith("...") else ln.split()[2] for ln in lines if ln.startswith("[")]
    assert [c.split("-")[-1] for c in started] == ["layered", "layered", "together", "together"]


def test_a_worker_skips_past_a_cell_that_would_wait_for_anothers_first_install() -> None:
    def cell(base: str, numpy: str, scipy: str, mode: str = "layered") -> Cell:
        return Cell(base, mode, (("numpy", numpy), ("scipy", scipy)))

    a, b, c, d = cell("p", "1", "x"), cell("p", "1", "y"), cell("p", "2", "z"), cell("q", "1", "x")
    e = cell("p", "1", "x", "together")
    pending = _Pending([a, b, c, d, e])
    assert pending.take() == a
    # b would wait for a's first install of numpy 1 on p, c and e for p's online install under way
    # (c's pins are new there); numpy 1 on q is another wheel than on p: d goes ahead
    assert pending.take() == d
    assert pending.take() == b  # everything waits on someone: in order
    pending.finished(a)
    pending.finished(d)
    assert pending.take() == e  # every pin of it installed on p: offline, nothing to wait for
    assert pending.take() == c
    assert pending.take() is None


class HangingBackend(ScriptedBackend):
    """Cells that run until cancelled, the way an interrupted install or probe does."""

    def __init__(self) -> None:
        super().__init__([])
        self.stop = threading.Event()
        self.started = threading.Semaphore(0)

    def cancel(self) -> None:
        self.stop.set()

    def run_cell(self, cell: Cell, log_dir: Path) -> Record:
        self.started.release()
        self.stop.wait(20)
        raise Cancelled("the run was interrupted")


def test_an_interrupt_cancels_the_cells_under_way_and_records_none_of_them(tmp_path: Path) -> None:
    backend = HangingBackend()

    def interrupt_once_both_run(wait: float) -> None:
        raise AssertionError("no retries expected")

    def echo(line: str) -> None:
        if line.startswith("[2/"):
            threading.Thread(target=lambda: (backend.started.acquire(), backend.started.acquire(),
                                             _thread.interrupt_main())).start()

    result = sweep(CELLS, backend, tmp_path, "r1", echo=echo, jobs=2, sleep=interrupt_once_both_run)
    assert result.interrupted == 130 and backend.stop.is_set()
    assert result.records == [] and load_records(tmp_path / "runs" / "r1.jsonl") == []


def test_the_result_cache_answers_unchanged_cells_and_rerun_runs_them(make_spec, tmp_path: Path) -> None:
    s = make_spec('bases: {b: {image: "x"}}\npackages: {numpy: ["1.0", "2.0", "3.0"]}\nmodes: [together]\n')
    cache = ResultCache(s, "scripted", directory=tmp_path / "cache")
    backend = ScriptedBackend([(Outcome.PASS, ""), (Outcome.NO_WHEEL, "x"), (Outcome.INFRA_ERROR, "net")] * 3)
    backend.base_id = lambda base: "id-1"  # type: ignore[method-assign]
    first = sweep(CELLS, backend, tmp_path / "r", "r1", echo=lambda _: None, cache=cache, retry_waits=())
    assert [r.cached for r in first.records] == [False] * 3
    lines: list[str] = []
    again = sweep(CELLS, backend, tmp_path / "r", "r2", echo=lines.append, cache=cache, retry_waits=())
    assert backend.calls == [c.id for c in CELLS] + [CELLS[2].id]  # the infra-error has no verdict to keep
    assert [(r.outcome, r.cached) for r in again.records] == [
        (Outcome.PASS, True), (Outcome.NO_WHEEL, True), (Outcome.PASS, False)]
    assert "2 cell(s) from the result cache" in lines[0]
    sweep(CELLS, backend, tmp_path / "r", "r3", echo=lambda _: None, cache=cache, rerun=True, retry_waits=())
    assert len(backend.calls) == 7


def test_the_first_install_of_a_pin_is_waited_for_and_only_pins_installed_in_the_run_go_offline() -> None:
    from matrix.install import RunInstalls

    installs = RunInstalls()
    a = Cell("b", "together", (("numpy", "1.0"), ("scipy", "1.0")))
    b = Cell("b", "layered", (("numpy", "1.0"), ("scipy", "2.0")))
    order: list[str] = []
    seen: dict[str, bool] = {}

    def second() -> None:
        with installs.hold(b) as offline:
            seen["b"] = offline
            order.append("b")

    with installs.hold(a) as offline:
        seen["a"] = offline
        t = threading.Thread(target=second)
        t.start()
        t.join(0.3)
        assert t.is_alive()  # numpy==1.0 is being installed by a: b waits
        order.append("a")
        installs.installed(a)
    t.join(10)
    assert order == ["a", "b"] and seen == {"a": False, "b": False}  # scipy==2.0 is new to the run
    with installs.hold(a) as offline:  # installed once already: nobody waits, and the index pages are fresh
        assert offline
        with installs.hold(Cell("b", "together", (("numpy", "1.0"),))) as also:
            assert also
    with installs.hold(b) as offline:  # b's install never succeeded: still online
        assert not offline
    with installs.hold(Cell("c", "together", (("numpy", "1.0"),))) as offline:
        assert not offline  # installed on base b, not c: another wheel (another interpreter)


def test_an_install_tries_offline_only_after_the_run_installed_its_pins_and_falls_back_online() -> None:
    from matrix.classify import Verdict
    from matrix.install import RunInstalls

    installs = RunInstalls()
    cell = Cell("b", "together", (("numpy", "2.2.6"), ("scipy", "1.11.4")))
    tried: list[str] = []
    log: list[str] = []

    def attempt(results: dict[bool, Verdict | None]) -> Callable[[bool], Verdict | None]:
        def go(offline: bool) -> Verdict | None:
            tried.append("offline" if offline else "online")
            return results[offline]
        return go

    assert installs.install(cell, attempt({False: None}), lambda: tried.append("start over"), log) is None
    assert tried == ["online"]  # new to the run: online only
    # What is missing offline is no verdict (uv's words, both seen): online again.
    conflict = Verdict(Outcome.RESOLVE_CONFLICT, "Because scipy==1.11.4 depends on numpy>=1.21.6,<1.28.0 and you "
                                                 "require numpy==2.2.6, we can conclude that your requirements and "
                                                 "scipy==1.11.4 are incompatible.")
    for missing in ("Because numpy was not found in the cache and you require numpy==2.2.6, we can conclude that "
                    "your requirements are unsatisfiable.",
                    "Because numpy==2.2.6 needs to be downloaded from a registry and you require numpy==2.2.6, we "
                    "can conclude that your requirements are unsatisfiable."):
        del tried[:]
        assert installs.install(cell, attempt({True: Verdict(Outcome.RESOLVE_CONFLICT, missing), False: conflict}),
                                lambda: tried.append("start over"), log) is conflict
        assert tried == ["offline", "start over", "online"] and "online" in log[-1]
    del tried[:]
    assert installs.install(cell, attempt({True: None}), lambda: tried.append("start over"), log) is None
    assert tried == ["offline"]
    # One pin's requirement excluding another pin rests on metadata this run read online: as online.
    assert installs.install(cell, attempt({True: conflict}), lambda: tried.append("start over"), log) is conflict
    assert tried[1:] == ["offline"] and "as online" in log[-1]
    no_wheel = Verdict(Outcome.NO_WHEEL, "no wheel for this platform")
    assert installs.install(cell, attempt({True: no_wheel, False: None}), lambda: tried.append("start over"),
                            log) is None
    assert tried[2:] == ["offline", "start over", "online"]


def test_a_pin_the_run_found_without_a_wheel_on_a_base_settles_offline_there() -> None:
    from matrix.classify import Verdict
    from matrix.install import RunInstalls

    installs = RunInstalls()
    no_wheel = Verdict(Outcome.NO_WHEEL, "Because numpy==1.21.6 has no usable wheels and you require numpy==1.21.6, "
                                         "we can conclude that your requirements are unsatisfiable.")
    tried: list[str] = []
    log: list[str] = []

    def attempt(offline: bool) -> Verdict | None:
        tried.append("offline" if offline else "online")
        return no_wheel

    first = Cell("py313", "together", (("numpy", "1.21.6"), ("scipy", "1.14.1")))
    installs.installed(Cell("py313", "together", (("scipy", "1.14.1"),)))
    installs.installed(Cell("py312", "together", (("numpy", "1.21.6"),)))
    assert installs.install(first, attempt, lambda: tried.append("start over"), log) is no_wheel
    assert tried == ["online"]  # numpy 1.21.6 is new on py313 (py312's install of it is another wheel)
    layered = Cell("py313", "layered", (("numpy", "1.21.6"), ("scipy", "1.14.1")))
    assert installs.install(layered, attempt, lambda: tried.append("start over"), log) is no_wheel
    assert tried == ["online", "offline"] and "as online" in log[-1]  # what online said here, from the pages
    other = Cell("py312", "together", (("numpy", "1.21.6"), ("scipy", "1.14.1")))
    installs.installed(Cell("py312", "together", (("scipy", "1.14.1"),)))
    assert installs.install(other, attempt, lambda: tried.append("start over"), log) is no_wheel
    assert tried[2:] == ["offline", "start over", "online"]  # py312 has a wheel of it: only online may say none
    # A cell with that pin and one new to the base: offline first (its layered first step, or the
    # resolver, may stop at the pin without a wheel, as online); anything else offline: online.
    newer = Cell("py313", "layered", (("numpy", "1.21.6"), ("scipy", "1.15.3")))
    assert installs.install(newer, attempt, lambda: tried.append("start over"), log) is no_wheel
    assert tried[5:] == ["offline"]
    missing_scipy = Verdict(Outcome.RESOLVE_CONFLICT, "Because scipy==1.15.3 needs to be downloaded from a registry "
                                                      "and you require scipy==1.15.3, we can conclude that your "
                                                      "requirements are unsatisfiable.")
    assert installs.install(newer, lambda offline: missing_scipy if offline else None,
                            lambda: tried.append("start over"), log) is None
    assert tried[6:] == ["start over"] and "online" in log[-1]
    # Words of the cache or the network are no answer, whatever the pin.
    missing = Verdict(Outcome.NO_WHEEL, "Because numpy==1.21.6 has no usable wheels in the cache and you require "
                                        "numpy==1.21.6, we can conclude that your requirements are unsatisfiable.")
    assert not installs._settled_offline(missing, layered)


# What uv's online resolve of one pin alone prints (install.resolve_command), by pin.
BRINGS = {"numpy==1.0": "numpy==1.0\n", "numpy==3.0": "numpy==3.0\n", "scipy==2.0": "numpy==1.5\nscipy==2.0\n",
          "torch==2.0": "filelock==3.0\nnumpy==3.0\ntorch==2.0\n"}


class Resolver:
    """A backend's `resolve`: BRINGS, each pin's resolves counted."""

    def __init__(self, said: dict[str, str | None] | None = None) -> None:
        self.said = BRINGS if said is None else said
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, pin: str) -> str | None:
        with self.lock:
            self.asked.append(pin)
        return self.said[pin]


def test_a_cell_whose_pins_bring_only_packages_it_pins_installs_offline_at_once_without_waiting() -> None:
    from matrix.classify import Verdict
    from matrix.install import RunInstalls

    installs = RunInstalls()
    resolve = Resolver()
    a = Cell("b", "together", (("numpy", "1.0"), ("scipy", "2.0")))
    b = Cell("b", "layered", (("numpy", "1.0"), ("scipy", "2.0")))
    tried: list[tuple[str, bool]] = []
    first_in, release = threading.Event(), threading.Event()

    def attempt(name: str) -> Callable[[bool], Verdict | None]:
        def go(offline: bool) -> Verdict | None:
            tried.append((name, offline))
            if name == "a":
                first_in.set()
                assert release.wait(10)
            return None
        return go

    log: list[str] = []
    first = threading.Thread(target=installs.install, args=(a, attempt("a"), list, log), kwargs={"resolve": resolve})
    first.start()
    assert first_in.wait(10)
    # a's first install of numpy 1.0 and scipy 2.0 is under way, and b needs neither to be through:
    assert installs.install(b, attempt("b"), list, log, resolve=resolve) is None
    release.set()
    first.join(10)
    assert sorted(tried) == [("a", True), ("b", True)]  # offline, both, side by side
    assert sorted(resolve.asked) == ["numpy==1.0", "scipy==2.0"]  # once each in the run, whoever needs it
    assert "every package the pins bring is pinned here" in log[0]
    # A cell on another base: its pins are resolved there again (another interpreter)
    installs.install(Cell("c", "together", (("numpy", "1.0"),)), attempt("c"), list, log, resolve=resolve)
    assert resolve.asked[-1] == "numpy==1.0" and tried[-1] == ("c", True)


def test_a_pin_that_brings_a_package_the_cell_does_not_pin_keeps_the_cell_on_the_online_way() -> None:
    """torch brings filelock: offline, an older filelock than online could stay in the venv."""
    from matrix.classify import Verdict
    from matrix.install import RunInstalls

    installs = RunInstalls()
    tried: list[bool] = []

    def attempt(offline: bool) -> Verdict | None:
        tried.append(offline)
        return None

    torch = Cell("b", "layered", (("numpy", "3.0"), ("torch", "2.0")))
    assert installs.install(torch, attempt, list, [], resolve=Resolver()) is None
    assert tried == [False]  # new to the run: online
    # A resolve that failed, or said what is not only pins, is not known: as without one.
    for said in (None, "numpy==3.0\nmylib @ https://example.invalid/mylib.whl\n"):
        installs = RunInstalls()
        assert installs.install(Cell("b", "together", (("numpy", "3.0"),)), attempt, list, [],
                                resolve=Resolver({"numpy==3.0": said})) is None
        assert tried[-1] is False
    # An override cell is never resolved (its overrides change what the pins bring).
    resolve = Resolver()
    installs.install(Cell("b", "override", (("numpy", "1.0"), ("scipy", "2.0"))), attempt, list, [], resolve=resolve)
    assert resolve.asked == [] and tried[-1] is False


def test_offline_wanting_on_that_way_goes_online_and_a_conflict_of_the_pins_is_settled_offline() -> None:
    from matrix.classify import Verdict
    from matrix.install import RunInstalls

    installs = RunInstalls()
    tried: list[str] = []
    log: list[str] = []
    missing = Verdict(Outcome.RESOLVE_CONFLICT, "Because numpy==3.0 needs to be downloaded from a registry and you "
                                                "require numpy==3.0, we can conclude that your requirements are "
                                                "unsatisfiable.")
    cell = Cell("b", "together", (("numpy", "3.0"),))
    assert installs.install(cell, lambda offline: tried.append(str(offline)) or (missing if offline else None),
                            lambda: tried.append("start over"), log, resolve=Resolver()) is None
    assert tried == ["True", "start over", "False"] and "online" in log[-1]
    conflict = Verdict(Outcome.RESOLVE_CONFLICT, "Because scipy==2.0 depends on numpy<2 and you require numpy==3.0, "
                                                 "we can conclude that your requirements and scipy==2.0 are "
                                                 "incompatible.")
    both = Cell("b", "together", (("numpy", "3.0"), ("scipy", "2.0")))
    del tried[:]
    assert installs.install(both, lambda offline: tried.append(str(offline)) or conflict, list, log,
                            resolve=Resolver()) is conflict
    assert tried == ["True"] and "as online" in log[-1]


def test_the_pins_of_a_cell_are_resolved_side_by_side() -> None:
    """Each resolve mostly waits on the index: a cell's two pins resolve at the same time (each
    waits here for the other to have started, and fails when it does not)."""
    from matrix.install import RunInstalls

    both = threading.Barrier(2, timeout=5)

    def resolve(pin: str) -> str | None:
        both.wait()
        return BRINGS[pin]

    tried: list[bool] = []
    cell = Cell("b", "together", (("numpy", "1.0"), ("scipy", "2.0")))
    assert RunInstalls().install(cell, lambda offline: tried.append(offline), list, [], resolve=resolve) is None
    assert tried == [True]


CELLS4 = tuple(Cell("b", "together", (("numpy", v),)) for v in ("1.0", "2.0", "3.0", "4.0"))


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_unwritable_log_directory_is_every_cells_infra_error_and_no_worker_dies(tmp_path: Path, jobs: int) -> None:
    (tmp_path / "logs").write_text("a file where the cells' log directories go\n")
    backend = ScriptedBackend([(Outcome.PASS, "")] * 4)
    waits: list[float] = []
    result = sweep(CELLS4, backend, tmp_path, "r1", echo=lambda _: None, jobs=jobs, retry_waits=(1.0,),
                   sleep=waits.append)
    assert sorted(r.cell for r in result.records) == sorted(c.id for c in CELLS4)
    assert {r.outcome for r in result.records} == {Outcome.INFRA_ERROR}
    assert {r.error for r in result.records} == {
        f"the cells' log directory {tmp_path / 'logs'} cannot be written: [Errno 20] Not a directory"}
    assert backend.calls == []  # no cell ran without its logs
    assert len(waits) <= jobs  # the same fault on every cell: retried once, not per cell (two may race)
    assert result.stopped is None and len(load_records(tmp_path / "runs" / "r1.jsonl")) == 4


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_verdict_store_that_cannot_be_written_makes_infra_errors_and_keeps_nothing(
        make_spec, tmp_path: Path, jobs: int) -> None:
    s = make_spec('bases: {b: {image: "x"}}\npackages: {numpy: ["1.0", "2.0", "3.0", "4.0"]}\nmodes: [together]\n')
    store = tmp_path / "cache"
    store.write_text("a file where the verdict store goes\n")
    cache = ResultCache(s, "scripted", directory=store)
    backend = ScriptedBackend([(Outcome.PASS, ""), (Outcome.NO_WHEEL, "x"), (Outcome.PASS, ""), (Outcome.PASS, "")])
    backend.base_id = lambda base: "id-1"  # type: ignore[method-assign]
    waits: list[float] = []
    result = sweep(CELLS4, backend, tmp_path / "r", "r1", echo=lambda _: None, cache=cache, jobs=jobs,
                   sleep=waits.append)
    assert sorted(r.cell for r in result.records) == sorted(c.id for c in CELLS4)
    assert {r.outcome for r in result.records} == {Outcome.INFRA_ERROR}
    assert all(r.error.startswith(f"the result cache {store} cannot keep verdicts: [Errno 20] Not a directory (this "
                                  "cell's was ") for r in result.records)
    assert waits == [] and sorted(backend.calls) == sorted(c.id for c in CELLS4)  # each ran once: no retry
    store.unlink()  # mended: nothing was kept, so every cell runs again
    again = ScriptedBackend([(Outcome.PASS, "")] * 4)
    again.base_id = lambda base: "id-1"  # type: ignore[method-assign]
    sweep(CELLS4, again, tmp_path / "r", "r2", echo=lambda _: None, cache=cache)
    assert len(again.calls) == 4


def test_a_record_log_that_cannot_be_written_stops_the_sweep_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r1.jsonl").symlink_to("/dev/full")  # every write: ENOSPC, as a full disk gives
    backend = ScriptedBackend([(Outcome.PASS, "")] * 3)
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, sleep=lambda _: None)
    assert [r.outcome for r in result.records] == [Outcome.PASS]  # the verdict stays, for the table
    assert result.stopped == (f"the run's record log {tmp_path / 'runs' / 'r1.jsonl'} cannot be written: [Errno 28] "
                              "No space left on device: stopped after 1 of 3 cells")
    assert backend.calls == [CELLS[0].id]


def test_a_record_log_that_cannot_be_opened_runs_nothing_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file where the run logs go\n")
    backend = ScriptedBackend([(Outcome.PASS, "")] * 3)
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None)
    assert result.records == [] and backend.calls == []
    assert result.stopped and "cannot be written: [Errno 17] File exists" in result.stopped


def test_an_exception_in_the_sweeps_own_step_is_the_cells_infra_error(make_spec, tmp_path: Path) -> None:
    s = make_spec('bases: {b: {image: "x"}}\npackages: {numpy: ["1.0", "2.0", "3.0"]}\nmodes: [together]\n')

    class BrokenCache(ResultCache):
        def key(self, cell: Cell, base_id: str) -> str:
            if cell.id == CELLS[1].id:
                raise ValueError("a key that cannot be made")
            return super().key(cell, base_id)

    cache = BrokenCache(s, "scripted", directory=tmp_path / "cache")
    backend = ScriptedBackend([(Outcome.PASS, "")] * 3)
    backend.base_id = lambda base: "id-1"  # type: ignore[method-assign]
    result = sweep(CELLS, backend, tmp_path / "r", "r1", echo=lambda _: None, cache=cache, rerun=True, jobs=2)
    got = {r.cell: r for r in result.records}
    assert len(got) == 3 and got[CELLS[1].id].outcome is Outcome.INFRA_ERROR
    assert got[CELLS[1].id].error == "the sweep failed on this cell: ValueError: a key that cannot be made"


def test_kept_venvs_are_named_as_their_cells_finish(tmp_path: Path) -> None:
    class Keeping(ScriptedBackend):
        def run_cell(self, cell: Cell, log_dir: Path) -> Record:
            (log_dir / "venv-path").write_text(f"/tmp/kept/{cell.id}/venv\n")
            return super().run_cell(cell, log_dir)

    lines: list[str] = []
    sweep(CELLS[:2], Keeping([(Outcome.PASS, "")] * 2), tmp_path, "r1", echo=lines.append)
    kept = [ln.strip() for ln in lines if "venv:" in ln]
    assert kept == [f"kept {c.id}'s venv: /tmp/kept/{c.id}/venv" for c in CELLS[:2]]
