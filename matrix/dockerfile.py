"""Renders the Dockerfile and build context of one cell. Pure: no engine.

The docker backend builds exactly this, and `compat-matrix reproduce` prints or writes it, so a
user can rebuild any cell by hand and see what the sweep saw.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from matrix import install
from matrix.cells import Cell
from matrix.probing import probe_files
from matrix.spec import Spec

ROOT = "/opt/compat-matrix"
VENV_PYTHON = f"{ROOT}/venv/bin/python"
CA_PATH = f"{ROOT}/ca-bundle.pem"
PROBES_DIR = f"{ROOT}/probes"
DRIVER = f"{PROBES_DIR}/_driver.py"


# Where a credentialed build's pip configuration lives, only for the length of one RUN step.
PIP_CONF = "/tmp/compat-matrix-pip.conf"
# What `reproduce` shows in place of the build's one-time address.
SECRET_URL_PLACEHOLDER = "http://127.0.0.1:PORT/TOKEN"


@dataclass(frozen=True)
class BuildContext:
    dockerfile: str
    # Context-relative name → file on this machine.
    files: dict[str, Path]
    # With credentials in the index URLs: the pip configuration that holds them. It is never put
    # in the context or a layer; each install step fetches it from `secrets_url` and deletes it.
    pip_conf: str | None = None

    def write(self, directory: Path) -> None:
        """Lay the context out in `directory`, ready for `docker build`."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Dockerfile").write_text(self.dockerfile, encoding="utf-8")
        for name, source in self.files.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _wheel_dist(filename: str) -> str:
    return canonicalize_name(filename.split("-", 1)[0])


def _with_config_from(url: str, pip_args: list[str]) -> str:
    """A RUN line that fetches the pip config, installs with it and removes it in the same step,
    so neither the layer, `docker history` nor `inspect` ever holds the credentials."""
    fetch = shlex.join([VENV_PYTHON, "-c", "import sys, urllib.request as u; "
                        "open(sys.argv[2], 'wb').write(u.urlopen(sys.argv[1]).read())", url, PIP_CONF])
    install_ = shlex.join([VENV_PYTHON, "-m", "pip", *pip_args])
    return (f"RUN {fetch}; rc=$?; if [ $rc -eq 0 ]; then PIP_CONFIG_FILE={PIP_CONF} {install_}; rc=$?; fi; "
            f"rm -f {PIP_CONF}; exit $rc")


def context(cell: Cell, spec: Spec, labels: dict[str, str] | None = None,
            secrets_url: str = SECRET_URL_PLACEHOLDER) -> BuildContext:
    """The cell's Dockerfile and context. `secrets_url` is where a build with credentials in its
    index URLs fetches the pip configuration (served by the docker backend for the build)."""
    base = spec.base(cell.base)
    files: dict[str, Path] = {}
    if base.image is None:
        raise ValueError(f"base {base.name} has no image")  # the backend skips such bases
    lines = [f"# compat-matrix cell {cell.id}", f"FROM {base.image}"]
    if labels:
        # Right after FROM, so every intermediate layer and build container carries them too:
        # a build that fails half-way leaves nothing that cleanup by label cannot find.
        lines.append("LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())))
    # Setup steps are the user's own shell commands, kept as written (one RUN each).
    lines += [f"RUN {step}" for step in base.setup]
    lines.append(f"RUN {shlex.quote(base.image_python)} -m venv {ROOT}/venv")
    env = ["PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_CACHE_DIR=1", "PIP_NO_INPUT=1",
           "PIP_ROOT_USER_ACTION=ignore"]
    if spec.install.ca_bundle is not None:
        # After the setup steps: installing ca-certificates there regenerates the default bundle.
        files["ca-bundle.pem"] = spec.install.ca_bundle
        lines.append(f"COPY ca-bundle.pem {CA_PATH}")
        env += [f"PIP_CERT={CA_PATH}", f"SSL_CERT_FILE={CA_PATH}", f"REQUESTS_CA_BUNDLE={CA_PATH}"]
    lines.append("ENV " + " ".join(env))
    links: list[str] = []
    wanted = {canonicalize_name(name) for name, _ in cell.pins}
    for i, link in enumerate(spec.install.find_links):
        if "://" in link:
            links.append(link)
            continue
        # Only the wheels of this cell's packages enter the context: a torch wheel is GBs.
        wheels = sorted(p for p in Path(link).glob("*.whl") if _wheel_dist(p.name) in wanted)
        if wheels:
            for w in wheels:
                files[f"find-links-{i}/{w.name}"] = w
            lines.append(f"COPY find-links-{i} {ROOT}/find-links-{i}")
            links.append(f"{ROOT}/find-links-{i}")
    secret = install.has_credentials(spec)
    for step in install.steps(cell, spec, links, index_in_config=secret):
        if secret:
            lines.append(_with_config_from(secrets_url, list(step.args)))
        else:
            lines.append("RUN " + shlex.join([VENV_PYTHON, "-m", "pip", *step.args]))
    for name, source in probe_files().items():
        files[f"probes/{name}"] = source
    # Probes last: changing them never invalidates the install layers.
    lines.append(f"COPY probes {PROBES_DIR}")
    return BuildContext("\n".join(lines) + "\n", files, install.pip_conf(spec, links) if secret else None)
