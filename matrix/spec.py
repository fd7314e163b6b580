"""Reads a matrix file and validates it completely before anything runs.

Everything that later reaches a shell line, an image reference or an installer argument passes
through here first, so the rest of the code can trust a `Spec`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from matrix.errors import ConfigError, has_credentials
from matrix.gpus import Invalid as InvalidGpus
from matrix.gpus import parse as parse_gpus
from matrix.inputs import did_you_mean, kind_of, load_yaml, read_text

MODES = ("together", "layered", "override")

# PEP 508 names; ASCII letters, digits, and . _ - inside.
_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")
_SEPARATORS = re.compile(r"[-_.]+")
# A plain version: the characters PEP 440 allows, no spaces, no operators, no markers.
_VERSION_CHARS = re.compile(r"^[A-Za-z0-9.!+_-]+$")
_BASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A Docker image reference: [registry[:port]/]path[:tag][@digest]; nothing a shell would act on.
_IMAGE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_PYTHON = re.compile(r"^[A-Za-z0-9_./+-]+$")
_MEMORY = re.compile(r"^[0-9]+[bkmgBKMG]?$")
_MEMORY_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MIN_MEMORY = 6 * 1024**2  # the smallest memory limit Docker accepts
MAX_TIMEOUT_S = 86_400  # a probe's limit: a day
_URL = re.compile(r"^(https?|file)://[^\s'\"`$;|&<>\\]+$")

TOP_KEYS = ("bases", "packages", "modes", "layered_order", "exclude", "include", "install", "limits")
BASE_KEYS = ("image", "dockerfile", "setup", "python", "gpus")
INSTALL_KEYS = ("only_binary", "index_url", "extra_index_urls", "find_links", "ca_bundle")
LIMIT_KEYS = ("timeout_s", "memory")
QUERY_KEYS = ("spec", "pick", "latest", "pre")
# A pinned axis with an index of its own (torch's CUDA builds: {versions: [...], index_url: ...}).
SOURCED_KEYS = ("versions", "index_url")


_PY_VERSION = re.compile(r"^[0-9]+\.[0-9]+$")


@dataclass(frozen=True)
class Base:
    """Where cells run: an image (docker backend), an interpreter (venv backend), or both.

    `python` is a path, a command name, or a version such as "3.12" (python3.12 in the image;
    found on PATH or under pyenv by the venv backend). None: python3 in an image, and no
    interpreter for the venv backend.
    """

    name: str
    image: str | None = None
    python: str | None = None
    setup: tuple[str, ...] = ()
    # GPUs its cells ask for (matrix.gpus: "all", "count:N", "device:0,1"); None: none.
    gpus: str | None = None
    # The team's own Dockerfile (an absolute path): the docker backend builds it with its own
    # directory as the context and its cells go on top of what the image has installed.
    dockerfile: str | None = None

    @property
    def image_python(self) -> str:
        """The interpreter command inside the image."""
        if self.python is None:
            return "python3"
        return f"python{self.python}" if _PY_VERSION.match(self.python) else self.python


@dataclass(frozen=True)
class InstallOptions:
    only_binary: bool = True
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    # Local directories (absolute, on this machine) or URLs.
    find_links: tuple[str, ...] = ()
    # The CA bundle on this machine handed to the installer inside every cell; None for none.
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 300.0
    memory: str = "4g"


@dataclass(frozen=True)
class CellFilter:
    """One `exclude` or `include` entry: a base, a mode and pins, any of them optional."""

    base: str | None = None
    mode: str | None = None
    pins: tuple[tuple[str, str], ...] = ()
    reason: str = ""


# How an axis given as a specifier picks among the releases it matches.
PICKS = ("latest-patch-per-minor", "all")


@dataclass(frozen=True)
class Query:
    """An axis given as a specifier: {spec: ">=1.24,<3", pick: latest-patch-per-minor, latest: 3}."""

    spec: str
    pick: str = "all"
    latest: int | None = None
    pre: bool = False


@dataclass(frozen=True)
class Spec:
    path: Path
    bases: tuple[Base, ...]
    # Package name (as written) and its versions, in file order.
    packages: tuple[tuple[str, tuple[str, ...]], ...]
    modes: tuple[str, ...]
    layered_order: tuple[str, ...]
    exclude: tuple[CellFilter, ...] = ()
    include: tuple[CellFilter, ...] = ()
    install: InstallOptions = field(default_factory=InstallOptions)
    limits: Limits = field(default_factory=Limits)
    # Axes given as specifiers, expanded from the index by expand(); their `packages` entry is
    # empty until then.
    queries: tuple[tuple[str, Query], ...] = ()
    # Package name → the index its axis comes from (searched before the others by every install of a
    # cell that pins it: torch's CUDA builds, 2.4.1+cu121 beside PyPI's 2.4.1).
    sources: tuple[tuple[str, str], ...] = ()
    # The day the run's world is taken as of (--as-of): the specifier axes pick from what was
    # uploaded by then, and every install excludes later uploads (install.options). Set by expand().
    as_of: dt.date | None = None

    @property
    def package_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.packages)

    def base(self, name: str) -> Base:
        for b in self.bases:
            if b.name == name:
                return b
        raise KeyError(name)


def load(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a matrix file. Raises ConfigError naming the file, the key and the fix."""
    p = Path(path)
    return parse(read_text(p, "file", "pass an existing matrix file with --config"), p)


def parse(text: str, path: Path) -> Spec:
    return _Validator(path, text).spec(load_yaml(text, str(path)))


def canonical_name(name: str) -> str:
    """A project name as indexes compare them (PEP 503): packaging's canonicalize_name, whose
    module imports packaging.tags (a tenth of what an unchanged re-run takes)."""
    return _SEPARATORS.sub("-", name).lower()



class _Validator:
    def __init__(self, path: Path, text: str = "") -> None:
        self.path = path
        self.file = str(path)
        self.text = text
        self.queries: list[tuple[str, Query]] = []
        self.sources: list[tuple[str, str]] = []

    def written(self, where: tuple[str | int, ...], value: Any) -> str:
        """The scalar at `where` as the file spells it (YAML reads 1.10 as the float 1.1: the text
        keeps the version the user typed), else the value as read."""
        return _scalar_text(self.text, where) or str(value)

    def fail(self, key: str, problem: str, fix: str = "") -> ConfigError:
        return ConfigError(self.file, key, problem, fix)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key or "(top level)", f"expected a mapping, got {kind_of(value)}")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(key or "(top level)", f"key {k!r} is not a string", "quote the key")
            if allowed is not None and k not in allowed:
                where = f"{key}.{k}" if key else k
                raise self.fail(where, "unknown key", did_you_mean(k, allowed))
        return value

    def string_list(self, value: Any, key: str, *, allow_empty: bool = True) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {kind_of(value)}")
        if not value and not allow_empty:
            raise self.fail(key, "is empty", "give at least one entry")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"{key}[{i}]", f"expected a non-empty string, got {kind_of(item)}")
        return value

    def spec(self, data: Any) -> Spec:
        if data is None:
            raise self.fail("", "the file is empty", "declare at least bases and packages")
        top = self.mapping(data, "", TOP_KEYS)
        for required in ("bases", "packages"):
            if required not in top:
                raise self.fail(required, "missing", f"add a '{required}:' section (see README)")
        bases = self.bases(top["bases"])
        packages = self.packages(top["packages"])
        names = tuple(n for n, _ in packages)
        modes = self.modes(top.get("modes", ["together"]))
        layered_order = self.layered_order(top.get("layered_order", list(names)), names)
        base_names = tuple(b.name for b in bases)
        exclude = self.filters(top.get("exclude", []), "exclude", base_names, modes, packages)
        include = self.filters(top.get("include", []), "include", base_names, modes, packages)
        return Spec(
            path=self.path,
            bases=bases,
            packages=packages,
            modes=modes,
            layered_order=layered_order,
            exclude=exclude,
            include=include,
            install=self.install(top.get("install", {})),
            limits=self.limits(top.get("limits", {})),
            queries=tuple(self.queries),
            sources=tuple(self.sources),
        )

    def bases(self, value: Any) -> tuple[Base, ...]:
        bases = self.mapping(value, "bases", None)
        if not bases:
            raise self.fail("bases", "is empty", "declare at least one base image")
        out = []
        for name, raw in bases.items():
            key = f"bases.{name}"
            if not _BASE_NAME.match(name):
                raise self.fail(key, "a base name may hold only letters, digits, '.', '_' and '-'",
                                "rename it, e.g. bookworm-py311")
            body = self.mapping(raw, key, BASE_KEYS)
            if "image" not in body and "python" not in body and "dockerfile" not in body:
                raise self.fail(key, "names neither an image, a Dockerfile nor an interpreter",
                                'add image: "python:3.11-slim-bookworm" and/or python: "3.11"')
            dockerfile = None
            if "dockerfile" in body:
                if "image" in body:
                    raise self.fail(f"{key}.dockerfile", "a base is an image or a Dockerfile, not both",
                                    "keep one: the Dockerfile's FROM names its image")
                if not isinstance(body["dockerfile"], str) or not body["dockerfile"].strip():
                    raise self.fail(f"{key}.dockerfile", f"expected a path, got {kind_of(body['dockerfile'])}")
                found = self.local_path(body["dockerfile"])
                if not found.is_file():
                    raise self.fail(f"{key}.dockerfile", f"{body['dockerfile']!r} is not a file on this machine",
                                    "give the path of a Dockerfile, relative to the matrix file")
                dockerfile = str(found)
            image = body.get("image")
            if image is not None and (not isinstance(image, str) or not _IMAGE.match(image)):
                raise self.fail(f"{key}.image", f"{image!r} is not an image reference",
                                "use name[:tag][@sha256:digest] with no spaces or shell characters")
            python = body.get("python")
            if isinstance(python, float):
                typed = self.written(("bases", name, "python"), python)
                raise self.fail(f"{key}.python", f"{typed} was read as the number {python!r}",
                                f'quote it: "{typed}" (YAML turns 3.10 into 3.1)')
            if python is not None and (not isinstance(python, str) or not _PYTHON.match(python)):
                raise self.fail(f"{key}.python", f"{python!r} is not an interpreter path, name or version",
                                'use e.g. "3.12", /usr/bin/python3.10 or python3')
            setup = tuple(self.string_list(body.get("setup", []), f"{key}.setup"))
            for i, step in enumerate(setup):
                if "\n" in step:
                    raise self.fail(f"{key}.setup[{i}]", "a setup step spans several lines",
                                    "give each command as its own list entry")
            gpus = None
            if "gpus" in body:
                try:
                    gpus = parse_gpus(body["gpus"])
                except InvalidGpus as e:
                    raise self.fail(f"{key}.gpus", e.problem, e.fix) from None
            out.append(Base(name=name, image=image, python=python, setup=setup, gpus=gpus, dockerfile=dockerfile))
        return tuple(out)

    def query(self, value: dict[str, Any], key: str) -> Query:

        body = self.mapping(value, key, QUERY_KEYS)
        if "spec" not in body or not isinstance(body["spec"], str):
            raise self.fail(f"{key}.spec", "missing", 'give a version specifier, e.g. spec: ">=1.24,<3"')
        try:
            SpecifierSet(body["spec"])
        except InvalidSpecifier:
            raise self.fail(f"{key}.spec", f"{body['spec']!r} is not a version specifier (PEP 440)",
                            'e.g. ">=1.24,<3"') from None
        pick = body.get("pick", "all")
        if pick not in PICKS:
            raise self.fail(f"{key}.pick", f"unknown pick {pick!r}", did_you_mean(str(pick), PICKS))
        latest = body.get("latest")
        if latest is not None and (isinstance(latest, bool) or not isinstance(latest, int) or latest < 1):
            raise self.fail(f"{key}.latest", f"expected a positive whole number, got {latest!r}", "e.g. latest: 3")
        pre = body.get("pre", False)
        if not isinstance(pre, bool):
            raise self.fail(f"{key}.pre", f"expected true or false, got {kind_of(pre)}")
        return Query(body["spec"], pick, latest, pre)

    def packages(self, value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
        packages = self.mapping(value, "packages", None)
        if not packages:
            raise self.fail("packages", "is empty", "declare at least one package, e.g. numpy: [\"1.26.4\"]")
        seen: dict[str, str] = {}
        out: list[tuple[str, tuple[str, ...]]] = []
        for name, versions in packages.items():
            key = f"packages.{name}"
            if not _NAME.match(name):
                raise self.fail(key, f"{name!r} is not a package name (PEP 508)",
                                "use the distribution name only; versions go in the list")
            canon = canonical_name(name)
            if canon in seen:
                raise self.fail(key, f"same package as {seen[canon]!r}", "keep one of the two")
            seen[canon] = name
            where: tuple[str | int, ...] = ("packages", name)
            if isinstance(versions, dict) and "versions" in versions:
                body = self.mapping(versions, key, SOURCED_KEYS)
                if "index_url" in body:
                    url = self.url(body["index_url"], f"{key}.index_url")
                    if has_credentials(url):
                        raise self.fail(f"{key}.index_url", "holds credentials (user:password@)",
                                        "put an index that needs them in install.extra_index_urls: only there "
                                        "do they stay off every command line")
                    self.sources.append((name, url))
                versions, key, where = body["versions"], f"{key}.versions", (*where, "versions")
            elif isinstance(versions, dict):
                self.queries.append((name, self.query(versions, key)))
                out.append((name, ()))
                continue
            if not isinstance(versions, list):
                raise self.fail(key, f"expected a list of versions or a {{spec: ...}} mapping, got {kind_of(versions)}",
                                f'write {name}: ["1.0.0"] or {name}: {{spec: ">=1.0", pick: latest-patch-per-minor}}')
            if not versions:
                raise self.fail(key, "is empty", "give at least one version")
            pins = []
            for i, v in enumerate(versions):
                pin = self.version(v, f"{key}[{i}]", (*where, i))
                if pin in pins:
                    raise self.fail(f"{key}[{i}]", f"{pin} is listed twice", "remove the duplicate")
                pins.append(pin)
            out.append((name, tuple(pins)))
        return tuple(out)

    def version(self, value: Any, key: str, where: tuple[str | int, ...] = ()) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(key, f"expected a version string, got {kind_of(value)}", 'quote it: "1.26.4"')
        if isinstance(value, float):
            # YAML reads 1.10 as the float 1.1: the hint quotes what the file says.
            typed = self.written(where, value) if where else str(value)
            raise self.fail(key, f"{typed} was read as the number {value!r}, not a version",
                            f'quote it: "{typed}" (YAML turns 1.10 into 1.1)')
        text = str(value)
        bad = not _VERSION_CHARS.match(text)
        if not bad:
            try:
                Version(text)
            except InvalidVersion:
                bad = True
        if bad:
            raise self.fail(key, f"{text!r} is not a plain PEP 440 version",
                            "give an exact version such as \"2.2.6\"; no operators, markers, URLs or spaces")
        return text

    def modes(self, value: Any) -> tuple[str, ...]:
        modes = self.string_list(value, "modes", allow_empty=False)
        for i, m in enumerate(modes):
            if m not in MODES:
                raise self.fail(f"modes[{i}]", f"unknown mode {m!r}", did_you_mean(m, MODES))
        if len(set(modes)) != len(modes):
            raise self.fail("modes", "a mode is listed twice", "list each mode once")
        return tuple(modes)

    def layered_order(self, value: Any, names: tuple[str, ...]) -> tuple[str, ...]:
        order = self.string_list(value, "layered_order")
        by_canon = {canonical_name(n): n for n in names}
        out: list[str] = []
        for i, item in enumerate(order):
            canon = canonical_name(item) if _NAME.match(item) else item
            if canon not in by_canon:
                raise self.fail(f"layered_order[{i}]", f"{item!r} is not in packages",
                                did_you_mean(item, list(names)))
            if by_canon[canon] in out:
                raise self.fail(f"layered_order[{i}]", f"{item!r} is listed twice", "list each package once")
            out.append(by_canon[canon])
        # Packages the order leaves out are installed after it, in file order.
        out.extend(n for n in names if n not in out)
        return tuple(out)

    def filters(
        self,
        value: Any,
        key: str,
        base_names: tuple[str, ...],
        modes: tuple[str, ...],
        packages: tuple[tuple[str, tuple[str, ...]], ...],
    ) -> tuple[CellFilter, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {kind_of(value)}")
        names = tuple(n for n, _ in packages)
        axis = dict(packages)
        allowed = ("base", "mode", "reason", *names)
        out = []
        for i, raw in enumerate(value):
            k = f"{key}[{i}]"
            entry = self.mapping(raw, k, allowed)
            base = entry.get("base")
            if base is not None and base not in base_names:
                raise self.fail(f"{k}.base", f"unknown base {base!r}", did_you_mean(str(base), base_names))
            mode = entry.get("mode")
            if mode is not None and mode not in MODES:
                raise self.fail(f"{k}.mode", f"unknown mode {mode!r}", did_you_mean(str(mode), MODES))
            pins = []
            for n in names:
                if n in entry:
                    pin = self.version(entry[n], f"{k}.{n}", (key, i, n))
                    if key == "exclude" and axis[n] and pin not in axis[n]:
                        raise self.fail(f"{k}.{n}", f"{pin} is not among the versions of {n}, so this "
                                        "exclude matches nothing", f"use one of {list(axis[n])}")
                    pins.append((n, pin))
            reason = entry.get("reason", "")
            if not isinstance(reason, str):
                raise self.fail(f"{k}.reason", f"expected a string, got {kind_of(reason)}")
            if key == "exclude":
                if not reason.strip():
                    raise self.fail(f"{k}.reason", "missing", 'say why, e.g. reason: "not needed"')
                if base is None and mode is None and not pins:
                    raise self.fail(k, "matches every cell", "name a base, a mode or a pin")
            else:
                if base is None:
                    raise self.fail(f"{k}.base", "missing", f"name the base, one of {list(base_names)}")
                if mode is not None and mode not in modes:
                    raise self.fail(f"{k}.mode", f"mode {mode!r} is not in modes", f"add it to modes: {list(modes)}")
                if not pins:
                    raise self.fail(k, "names no package pin", f"add pins, e.g. {names[0]}: \"1.0\"")
            out.append(CellFilter(base=base, mode=mode, pins=tuple(pins), reason=reason))
        return tuple(out)

    def install(self, value: Any) -> InstallOptions:
        body = self.mapping(value, "install", INSTALL_KEYS)
        only_binary = body.get("only_binary", True)
        if not isinstance(only_binary, bool):
            raise self.fail("install.only_binary", f"expected true or false, got {kind_of(only_binary)}")
        index_url = body.get("index_url")
        if index_url is not None:
            index_url = self.url(index_url, "install.index_url")
        extra = tuple(self.url(u, f"install.extra_index_urls[{i}]")
                      for i, u in enumerate(self.string_list(body.get("extra_index_urls", []),
                                                             "install.extra_index_urls")))
        find_links = []
        for i, item in enumerate(self.string_list(body.get("find_links", []), "install.find_links")):
            k = f"install.find_links[{i}]"
            if "://" in item:
                find_links.append(self.url(item, k))
                continue
            d = self.local_path(item)
            if not d.is_dir():
                raise self.fail(k, f"{item!r} is not a directory on this machine",
                                "give a directory of wheels or an https:// URL")
            find_links.append(str(d))
        return InstallOptions(
            only_binary=only_binary,
            index_url=index_url,
            extra_index_urls=extra,
            find_links=tuple(find_links),
            ca_bundle=self.ca_bundle(body.get("ca_bundle", "auto")),
        )

    def url(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not _URL.match(value):
            raise self.fail(key, f"{value!r} is not an http(s):// or file:// URL",
                            "give one URL with no spaces, quotes or shell characters")
        return value

    def local_path(self, text: str) -> Path:
        # Paths may name environment variables ($PIP_FIND_LINKS); relative paths are relative to
        # the matrix file, not to wherever the command was started.
        p = Path(os.path.expanduser(os.path.expandvars(text)))
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def ca_bundle(self, value: Any) -> Path | None:
        key = "install.ca_bundle"
        if value is None or value is False or value == "none":
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"expected a path, 'auto' or 'none', got {kind_of(value)}")
        if value == "auto":
            # The bundle the host's own installers trust (a corporate TLS proxy's CA lives there).
            for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
                candidate = os.environ.get(var)
                if candidate and Path(candidate).is_file():
                    return Path(candidate)
            return None
        p = self.local_path(value)
        if not p.is_file():
            raise self.fail(key, f"{value!r} is not a file", "give a PEM bundle, 'auto' or 'none'")
        return p

    def limits(self, value: Any) -> Limits:
        body = self.mapping(value, "limits", LIMIT_KEYS)
        timeout = body.get("timeout_s", 300)
        # One range check refuses .nan and .inf too (neither compares), and a 400-digit integer
        # before float() would overflow on it.
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
            shown = ("a number of more than 18 digits" if isinstance(timeout, int) and abs(timeout) >= 10**18
                     else repr(timeout))
            raise self.fail("limits.timeout_s", f"expected a number of seconds above 0 and at most {MAX_TIMEOUT_S} "
                            f"(a day), got {shown}", "e.g. timeout_s: 300")
        memory = body.get("memory", "4g")
        if not isinstance(memory, str) or not _MEMORY.match(memory) or len(memory) > 20:
            shown = repr(memory) if len(repr(memory)) <= 40 else repr(memory)[:37] + "..."
            raise self.fail("limits.memory", f"{shown} is not a memory size", 'e.g. memory: "4g" or "512m"')
        size = int(memory.rstrip("bkmgBKMG")) * _MEMORY_UNITS[(memory[-1:] if memory[-1:].isalpha() else "b").lower()]
        if not _MIN_MEMORY <= size < 2**63:
            which = "below Docker's smallest limit" if size < _MIN_MEMORY else "more than the engine can take"
            raise self.fail("limits.memory", f"{memory!r} is {which}", 'give 6m or more, e.g. memory: "4g"')
        return Limits(timeout_s=float(timeout), memory=memory.lower())


def _scalar_text(text: str, where: tuple[str | int, ...]) -> str | None:
    """The source text of the plain scalar at `where` (mapping keys and list positions) in the
    YAML document `text`; None when it cannot be found (a merge key, an alias, anything odd).
    Composes only (nodes, no values, aliases not expanded): used on the error path."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        for step in where:
            if isinstance(step, int) and isinstance(node, yaml.SequenceNode):
                node = node.value[step]
            elif isinstance(step, str) and isinstance(node, yaml.MappingNode):
                node = next(v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step)
            else:
                return None
    except Exception:  # noqa: BLE001 - a hint only: the message falls back to the value as read
        return None
    if not isinstance(node, yaml.ScalarNode) or node.style or not node.value or len(node.value) > 64:
        return None
    return str(node.value)


