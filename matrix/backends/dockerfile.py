"""Renders the Dockerfiles of the docker backend. Pure: no engine.

`prefix()` is what every cell of a base shares — the base image, its setup steps, the CA bundle,
the installer (uv) and the probes — built once per machine and reused by every run until one of
them changes. The docker backend installs each cell into a venv on the shared package cache
volume from a container of that image. `context()` is the same cell as one self-contained
Dockerfile: `compat-matrix reproduce` prints or writes it, so a user can rebuild any cell by hand
with `docker build` and see what the sweep saw.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from matrix import install, paths
from matrix.cells import Cell
from matrix.probing import probe_files
from matrix.spec import Base, Spec, canonical_name

ROOT = "/opt/compat-matrix"
UV = f"{ROOT}/bin/uv"
CA_PATH = f"{ROOT}/ca-bundle.pem"
PROBES_DIR = f"{ROOT}/probes"
DRIVER = f"{PROBES_DIR}/_driver.py"
FINGERPRINT = f"{PROBES_DIR}/_fingerprint.py"
BYTECODE = f"{PROBES_DIR}/_bytecode.py"
WORKBENCH_AGENT = f"{PROBES_DIR}/_workbench.py"
# The shared package cache (a volume): uv's cache, and the cells' venvs beside it, so installs
# are hard links into the cache rather than copies.
CACHE = f"{ROOT}/cache"
VENVS = f"{CACHE}/venvs"
# Bytecode per distribution content, compiled in the workbench, read by the probe containers.
PYC = f"{CACHE}/pyc"
# paths.spread for the base's Python (3.6+, stdlib), run in the workbench on the run's directory
# of venvs: the venvs are spread over the file system's block groups instead of packed into its
# own (on an ext4 without a journal a run frees ~2,300 directories, and the next run's venvs, made
# in the same group, cost up to a second of kernel time: perf, 12 cells, ext4_mkdir →
# recently_deleted; a tenth of that spread, in a run after a pause). Where ext4 puts a directory
# made in a spread one starts from a hash of its name: the venvs' names are new in every run
# (docker.venv_name), or each would land where the last run's copy was just removed. Other file
# systems refuse the flag: that is fine.
SPREAD = ("import fcntl, os, struct, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
          f"flags = struct.unpack('i', fcntl.ioctl(fd, {paths.FS_IOC_GETFLAGS:#x}, struct.pack('i', 0)))[0]; "
          f"fcntl.ioctl(fd, {paths.FS_IOC_SETFLAGS:#x}, struct.pack('i', flags | {paths.FS_TOPDIR_FL:#x}))")
# Where a reproduced cell's venv lives (reproduce builds one image, no volume).
VENV = f"{ROOT}/venv"
VENV_PYTHON = f"{VENV}/bin/python"
FIND_LINKS = f"{ROOT}/find-links"


@dataclass(frozen=True)
class BuildContext:
    dockerfile: str
    # Context-relative name → file on this machine.
    files: dict[str, Path]

    def write(self, directory: Path) -> None:
        """Lay the context out in `directory`, ready for `docker build`."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Dockerfile").write_text(self.dockerfile, encoding="utf-8")
        for name, source in self.files.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            shutil.copymode(source, target)

    def digest(self) -> str:
        """Changes when the Dockerfile or any file of the context does."""
        h = hashlib.sha256(self.dockerfile.encode())
        for name, source in sorted(self.files.items()):
            h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(source.read_bytes()).digest())
        return h.hexdigest()


def _wheel_dist(filename: str) -> str:
    return canonical_name(filename.split("-", 1)[0])


def cell_wheels(cell: Cell, spec: Spec) -> dict[str, Path]:
    """The wheels of this cell's packages in local find-links directories, by their path in the
    image (only those: a torch wheel is GBs)."""
    wanted = {canonical_name(name) for name, _ in cell.pins}
    out: dict[str, Path] = {}
    for i, link in enumerate(spec.install.find_links):
        if "://" in link:
            continue
        for w in sorted(Path(link).glob("*.whl")):
            if _wheel_dist(w.name) in wanted:
                out[f"{FIND_LINKS}-{i}/{w.name}"] = w
    return out


def find_links(cell: Cell, spec: Spec) -> list[str]:
    """The find-links options as the installer sees them inside the image."""
    wheels = cell_wheels(cell, spec)
    out = []
    for i, link in enumerate(spec.install.find_links):
        if "://" in link:
            out.append(link)
        elif any(p.startswith(f"{FIND_LINKS}-{i}/") for p in wheels):
            out.append(f"{FIND_LINKS}-{i}")
    return out


def find_links_all(spec: Spec) -> list[str]:
    """Every find-links entry as the installer sees it inside the image (local ones as directories
    that hold the wheels copied in for the cells that want them)."""
    return [link if "://" in link else f"{FIND_LINKS}-{i}" for i, link in enumerate(spec.install.find_links)]


def prefix(base: Base, spec: Spec, uv_binary: Path, labels: dict[str, str] | None = None) -> BuildContext:
    """What every cell of `base` shares, as a Dockerfile whose layers the engine reuses."""
    if base.image is None:
        raise ValueError(f"base {base.name} has no image")  # the backend skips such bases
    files: dict[str, Path] = {"uv": uv_binary}
    lines = [f"FROM {base.image}"]
    if labels:
        # Right after FROM, so every intermediate layer and build container carries them too:
        # a build that fails half-way leaves nothing that cleanup by label cannot find.
        lines.append("LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())))
    # Setup steps are the user's own shell commands, kept as written (one RUN each).
    lines += [f"RUN {step}" for step in base.setup]
    lines.append(f"COPY uv {UV}")
    env = [f"UV_CACHE_DIR={CACHE}/uv", "UV_PYTHON_DOWNLOADS=never", "UV_NO_PROGRESS=1",
           "PIP_DISABLE_PIP_VERSION_CHECK=1"]
    if spec.install.ca_bundle is not None:
        # After the setup steps: installing ca-certificates there regenerates the default bundle.
        files["ca-bundle.pem"] = spec.install.ca_bundle
        lines.append(f"COPY ca-bundle.pem {CA_PATH}")
        env += [f"SSL_CERT_FILE={CA_PATH}", f"PIP_CERT={CA_PATH}", f"REQUESTS_CA_BUNDLE={CA_PATH}"]
    lines.append("ENV " + " ".join(env))
    for name, source in probe_files().items():
        files[f"probes/{name}"] = source
    # Probes last: changing them rebuilds only this layer.
    lines.append(f"COPY probes {PROBES_DIR}")
    return BuildContext("\n".join(lines) + "\n", files)


def venv_command(base: Base, venv: str) -> list[str]:
    return [UV, "venv", "--quiet", "--python", base.image_python, venv]


# Run by the image's interpreter: a .pth in the venv naming that interpreter's site directories.
_SEE_THE_IMAGE = (
    "import os, site, sys; d = [p for p in site.getsitepackages() if os.path.isdir(p)]; "
    "t = os.path.join(sys.argv[1], 'lib', 'python%d.%d' % sys.version_info[:2], 'site-packages', "
    "'_compat_matrix_image.pth'); open(t, 'w').write(''.join(p + chr(10) for p in d))")


def image_packages_command(base: Base, venv: str) -> list[str]:
    """For a base built from the team's own Dockerfile: the cell's venv sees what the image has
    installed, after its own site-packages, so the cell's pins go on top of the image's packages as
    a later `RUN pip install` would (a .pth names the image interpreter's site directories; the
    image's interpreter is the venv's, so the Python versions agree)."""
    return [base.image_python, "-c", _SEE_THE_IMAGE, venv]


def install_commands(cell: Cell, spec: Spec, venv: str, *, offline: bool = False) -> list[list[str]]:
    """The cell's `uv pip` steps inside the image. With credentials in the index URLs the index
    options come from UV_CONFIG_FILE (install.uv_toml), never from the command line."""
    return install.uv_commands(cell, spec, UV, f"{venv}/bin/python", find_links(cell, spec),
                               index_in_config=install.has_credentials(spec), offline=offline)


def context(cell: Cell, spec: Spec, uv_binary: Path) -> BuildContext:
    """The cell as one self-contained Dockerfile (what `compat-matrix reproduce` gives a user)."""
    base = spec.base(cell.base)
    pre = prefix(base, spec, uv_binary)
    files = dict(pre.files)
    lines = [f"# compat-matrix cell {cell.id}", *pre.dockerfile.splitlines()]
    wheels = cell_wheels(cell, spec)
    for i in range(len(spec.install.find_links)):
        mine = {p: w for p, w in wheels.items() if p.startswith(f"{FIND_LINKS}-{i}/")}
        for w in mine.values():
            files[f"find-links-{i}/{w.name}"] = w
        if mine:
            lines.append(f"COPY find-links-{i} {FIND_LINKS}-{i}")
    if install.has_credentials(spec):
        lines.append("# The index URLs carry credentials: give them to uv in a uv.toml named by UV_CONFIG_FILE")
    lines.append("RUN " + shlex.join(venv_command(base, VENV)))
    lines += ["RUN " + shlex.join(argv) for argv in install_commands(cell, spec, VENV)]
    return BuildContext("\n".join(lines) + "\n", files)
