"""Beyond one machine: a sweep fanned out over the engines people already run, with no scheduler of
our own. Each engine starts N copies of `compat-matrix run --shard auto`; each copy learns its shard
from the engine's variables, writes its own results directory, and `compat-matrix merge` joins them.

- `--shard auto`: the shard index and count from a SLURM job array, a Kubernetes Indexed Job, GitLab's
  `parallel:` or Buildkite's parallel jobs (auto_shard); `{index}` / `{count}` in --results expand
  to them (expand_results), so shards never share a ledger.
- `compat-matrix shards --slurm N`: an sbatch array (one shard per task) and a merge job that runs
  after it, `--dependency=afterany` (slurm_scripts, slurm_submit).
- `compat-matrix shards --k8s N`: one Indexed Job per base image (the base image is the pod's image,
  the venv backend inside it), a podFailurePolicy that reads the exit codes, the results on a volume,
  and a merge Job (k8s_manifests).

The exit codes are the contract every engine's retry policy reads: 0 verdicts, 2 bad input (never
retried), 3 infra (that shard is retried), 143 a shard stopped by SIGTERM (a preemption; its
finished cells stay, and --resume, on every shard's command line, runs only the rest).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matrix import cells
from matrix.errors import EXIT_INFRA, CompatMatrixError, ConfigError, redact
from matrix.spec import Spec

# What --shard auto reads, in the order it looks: the first engine whose index variable is set wins.
SLURM_ID, SLURM_MIN, SLURM_MAX, SLURM_COUNT = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN",
                                               "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT")
K8S_INDEX = "JOB_COMPLETION_INDEX"
# The shard count where the engine does not give one (a Kubernetes Indexed Job: the manifest sets
# it), and the one a resubmitted part of a SLURM array (`sbatch --array=1`) keeps its meaning by.
SHARDS_ENV = "COMPAT_MATRIX_SHARDS"
GITLAB_INDEX, GITLAB_TOTAL = "CI_NODE_INDEX", "CI_NODE_TOTAL"
BUILDKITE_INDEX, BUILDKITE_COUNT = "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT"
LOOKED_FOR = (f"{SLURM_ID} (with {SLURM_MIN}/{SLURM_MAX}, {SLURM_COUNT} or {SHARDS_ENV}), "
              f"{K8S_INDEX} (with {SHARDS_ENV}), {GITLAB_INDEX}/{GITLAB_TOTAL}, {BUILDKITE_INDEX}/{BUILDKITE_COUNT}")

RUN_LABEL = "org.compat-matrix.run"  # as matrix.backends.engine.RUN_LABEL: everything made carries it
ROLE_LABEL = "org.compat-matrix.role"


@dataclass(frozen=True)
class Shard:
    """Shard k of n (1-based, as --shard K/N), and where it was read from (None: given by hand)."""

    k: int
    n: int
    source: str | None = None

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"


def _int(env: Mapping[str, str], name: str, where: str) -> int:
    text = env.get(name, "").strip()
    if not text.isdigit():
        raise ConfigError(where, "--shard auto", f"{name}={text!r} is not a whole number",
                          f"the engine sets {name}; check the job's environment")
    return int(text)


def auto_shard(env: Mapping[str, str], where: str = "--shard") -> Shard:
    """The shard the engine that started this process gives it (ConfigError, exit 2, when none does)."""
    if env.get(SLURM_ID, "").strip():
        task = _int(env, SLURM_ID, where)
        if env.get(SHARDS_ENV, "").strip():
            # compat-matrix's own array (0..N-1, N in the script): a task resubmitted alone with
            # `sbatch --array=K` is still shard K+1 of N.
            k, n = task + 1, _int(env, SHARDS_ENV, where)
            how = f"{SLURM_ID}={task}, {SHARDS_ENV}={n}"
        else:
            low = _int(env, SLURM_MIN, where) if env.get(SLURM_MIN, "").strip() else 0
            if env.get(SLURM_COUNT, "").strip():
                n = _int(env, SLURM_COUNT, where)
                if env.get(SLURM_MAX, "").strip() and _int(env, SLURM_MAX, where) - low + 1 != n:
                    raise ConfigError(where, "--shard auto", f"the SLURM array {low}-{env[SLURM_MAX]} has "
                                      f"{n} tasks: its indices are not consecutive",
                                      f"submit --array={low}-{low + n - 1}, or set {SHARDS_ENV}")
            elif env.get(SLURM_MAX, "").strip():
                n = _int(env, SLURM_MAX, where) - low + 1
            else:
                raise ConfigError(where, "--shard auto", f"{SLURM_ID} is set but not {SLURM_COUNT} nor "
                                  f"{SLURM_MAX}", f"run in a job array (sbatch --array), or set {SHARDS_ENV}")
            k = task - low + 1
            how = f"{SLURM_ID}={task} of {low}..{low + n - 1}"
        return _checked(k, n, f"SLURM job array ({how})", where)
    if env.get(K8S_INDEX, "").strip():
        index = _int(env, K8S_INDEX, where)
        if not env.get(SHARDS_ENV, "").strip():
            raise ConfigError(where, "--shard auto", f"{K8S_INDEX} is set (a Kubernetes Indexed Job) but not "
                              f"{SHARDS_ENV}, the shard count", f"set {SHARDS_ENV} to the Job's completions in "
                              "its env (`compat-matrix shards --k8s N` does)")
        n = _int(env, SHARDS_ENV, where)
        return _checked(index + 1, n, f"Kubernetes Indexed Job ({K8S_INDEX}={index}, {SHARDS_ENV}={n})", where)
    if env.get(GITLAB_INDEX, "").strip():
        k, n = _int(env, GITLAB_INDEX, where), _int(env, GITLAB_TOTAL, where)
        return _checked(k, n, f"GitLab parallel ({GITLAB_INDEX}={k}, {GITLAB_TOTAL}={n})", where)
    if env.get(BUILDKITE_INDEX, "").strip():
        index, n = _int(env, BUILDKITE_INDEX, where), _int(env, BUILDKITE_COUNT, where)
        return _checked(index + 1, n, f"Buildkite ({BUILDKITE_INDEX}={index}, {BUILDKITE_COUNT}={n})", where)
    raise ConfigError(where, "--shard auto", "no engine gave this process a shard: none of " + LOOKED_FOR
                      + " is set", "run it as a task of a job array / Indexed Job / parallel CI job, "
                      "or give --shard K/N")


def _checked(k: int, n: int, source: str, where: str) -> Shard:
    if not 1 <= k <= n:
        raise ConfigError(where, "--shard auto", f"shard {k} of {n} from the {source} is not 1..{n}",
                          "the index must be below the count the job declares")
    return Shard(k, n, source)


def shard_of(text: str, env: Mapping[str, str], where: str) -> Shard:
    """--shard's value: "K/N" or "auto" (from env)."""
    if text.strip() == "auto":
        return auto_shard(env, where)
    try:
        k, n = cells.parse_shard(text)
    except ValueError as e:
        raise ConfigError(where, "--shard", str(e), "e.g. --shard 2/4, or --shard auto under a job array") from None
    return Shard(k, n)


def expand_results(results: Path, shard: Shard | None, where: str) -> Path:
    """--results with its `{index}` (the shard's K) and `{count}` (N) filled in."""
    text = str(results)
    if "{index}" not in text and "{count}" not in text:
        return results
    if shard is None:
        raise ConfigError(where, "--results", f"{text!r} holds {{index}}/{{count}}, which only a shard run fills",
                          "give --shard K/N or --shard auto, or a plain directory")
    return Path(text.replace("{index}", str(shard.k)).replace("{count}", str(shard.n)))


# --- SLURM ---------------------------------------------------------------------------------------


def tool_command() -> list[str]:
    """How a job runs compat-matrix: this interpreter (a path on the shared file system), -m matrix."""
    return [sys.executable, "-m", "matrix"]


def shards_dir(results: Path) -> Path:
    """Where the shards of a fanned-out sweep write (beside the merged table, not in it)."""
    return results.with_name(results.name + ".shards")


@dataclass(frozen=True)
class Fanout:
    """A fanned-out sweep as `compat-matrix shards` is asked for it."""

    config: Path
    n: int
    results: Path = Path("results")
    jobs: int = 2
    backend: str = "venv"
    as_of: dt.date | None = None
    run_args: tuple[str, ...] = ()

    def common(self) -> list[str]:
        return ["--config", str(self.config)] + (["--as-of", self.as_of.isoformat()] if self.as_of else [])


def check(f: Fanout, option: str) -> None:
    if f.n < 1:
        raise ConfigError(option, "N", f"{f.n} shards", "give at least 1")
    if f.jobs < 1:
        raise ConfigError(option, "--jobs", f"{f.jobs} cells at a time", "give at least 1")


def fits(f: Fanout, spec: Spec, option: str) -> None:
    """N shards of this matrix, none empty (merge refuses a directory without records, as it would
    a shard that never ran)."""
    total = len(cells.plan(spec).cells)
    if f.n > total:
        raise ConfigError(str(f.config), option, f"{f.n} shards of {total} cells would leave shards empty",
                          f"give at most {total}")


def slurm_scripts(f: Fanout) -> tuple[str, str]:
    """The sbatch scripts: the array (task K-1 runs shard K of N) and the merge job (submitted with
    --dependency=afterany on the array, so it runs, and says which cells are missing, even when a
    task failed)."""
    check(f, "--slurm")
    config = f.config.resolve()
    results = f.results.resolve()
    where = shards_dir(results)
    tool = shlex.join(tool_command())
    fanned = Fanout(config, f.n, results, f.jobs, f.backend, f.as_of, f.run_args)
    run = shlex.join(["run", *fanned.common(), "--shard", "auto", "--results", str(where / "shard-{index}"),
                      "--backend", f.backend, "--jobs", str(f.jobs), "--resume", *f.run_args])
    merge = shlex.join(["merge", *fanned.common(), "--results", str(results),
                        *(str(where / f"shard-{k}") for k in range(1, f.n + 1))])
    array = f"""#!/bin/bash
# compat-matrix: shard K of {f.n} of {config} in array task K-1 (exit 0 verdicts, 2 bad input,
# 3 infra: resubmit that task with `sbatch --array=K-1 {where}/array.sbatch`; 143 preempted: the
# finished cells stay and --resume runs the rest).
#SBATCH --job-name=compat-matrix
#SBATCH --array=0-{f.n - 1}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={f.jobs}
#SBATCH --chdir={shlex.quote(str(config.parent))}
#SBATCH --output={where}/slurm-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
export {SHARDS_ENV}={f.n}
exec {tool} {run}
"""
    merged = f"""#!/bin/bash
# compat-matrix: one table from the {f.n} shards (exit 3 and the missing cells when a shard has none).
#SBATCH --job-name=compat-matrix-merge
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --chdir={shlex.quote(str(config.parent))}
#SBATCH --output={where}/slurm-merge-%j.out
exec {tool} {merge}
"""
    return array, merged


def slurm_submit_script(f: Fanout) -> str:
    """What `shards --slurm N` prints: a shell script that submits the array, then the merge job."""
    array, merge = slurm_scripts(f)
    where = shards_dir(f.results.resolve())
    return f"""#!/bin/bash
# Submit with: bash THIS-FILE (on a node that can sbatch; the paths are those of this machine).
set -euo pipefail
mkdir -p {shlex.quote(str(where))}
array=$(sbatch --parsable <<'COMPAT_MATRIX_ARRAY'
{array}COMPAT_MATRIX_ARRAY
)
merge=$(sbatch --parsable --dependency=afterany:${{array%%;*}} <<'COMPAT_MATRIX_MERGE'
{merge}COMPAT_MATRIX_MERGE
)
echo "array job ${{array%%;*}} ({f.n} shards), merge job ${{merge%%;*}}"
"""


@dataclass(frozen=True)
class Submitted:
    array: str
    merge: str
    scripts: tuple[Path, Path]


def _sbatch(args: list[str], script: Path) -> str:
    try:
        proc = subprocess.run(["sbatch", "--parsable", *args, str(script)], capture_output=True, text=True,
                              timeout=60)
    except FileNotFoundError:
        raise SlurmUnavailable("sbatch is not on PATH: submit from a node of a SLURM cluster") from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable("sbatch did not answer in 60 s (is slurmctld up?)") from None
    if proc.returncode != 0:
        raise SlurmUnavailable(f"sbatch {' '.join(args)} {script} failed ({proc.returncode}): "
                               + redact(proc.stderr.strip() or proc.stdout.strip()))
    return proc.stdout.strip().split(";")[0]


class SlurmUnavailable(CompatMatrixError):
    """sbatch missing, not answering or refusing: the tool's world (exit 3)."""

    exit_code = EXIT_INFRA


def slurm_submit(f: Fanout) -> Submitted:
    """Write the two scripts beside the shards' directories and submit them: the array, then the
    merge job after it (afterany). The scripts stay, so one task can be resubmitted by hand."""
    array, merge = slurm_scripts(f)
    where = shards_dir(f.results.resolve())
    try:
        where.mkdir(parents=True, exist_ok=True)
        scripts = (where / "array.sbatch", where / "merge.sbatch")
        for path, text in zip(scripts, (array, merge), strict=True):
            path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(where), "--results", f"cannot write the sbatch scripts: {e.strerror}",
                          "give a --results directory that can be made") from None
    array_id = _sbatch([], scripts[0])
    merge_id = _sbatch([f"--dependency=afterany:{array_id}"], scripts[1])
    return Submitted(array_id, merge_id, scripts)


# --- Kubernetes ----------------------------------------------------------------------------------

K8S_CONFIG = "/etc/compat-matrix/matrix.yaml"
K8S_RESULTS = "/results"
K8S_TOOL = "/opt/compat-matrix"
_DNS = re.compile(r"[^a-z0-9-]+")


def _k8s_name(*parts: str) -> str:
    """A DNS-1123 label (at most 63 characters; an Indexed Job's pods add `-<index>-<hash>`, so 40)."""
    text = _DNS.sub("-", "-".join(parts).lower()).strip("-")
    if len(text) > 40:
        text = text[:33].rstrip("-") + "-" + hashlib.sha256(text.encode()).hexdigest()[:6]
    return text


def _env(items: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in items.items()]


def k8s_manifests(f: Fanout, spec: Spec, matrix_text: str, *, install: str | None = None,
                  parallelism: int | None = None, backoff_per_index: int = 2,
                  storage: str = "1Gi") -> tuple[list[dict[str, object]], list[str]]:
    """The objects of a sweep on Kubernetes: the matrix file as a ConfigMap, a volume claim for the
    results, one Indexed Job per base image (N shards of that base's cells; the base image is the
    pod's image and the venv backend runs inside it), and the merge Job. Returns them and notes
    (bases left out)."""
    check(f, "--k8s")
    if redact(matrix_text) != matrix_text:
        raise ConfigError(str(f.config), "install", "the matrix file holds URL credentials, and a ConfigMap is "
                          "readable by anyone who can read the namespace", "write the URL as $VARIABLE in the "
                          "matrix file and set that variable in the Jobs from a Secret")
    imaged = [b for b in spec.bases if b.image]
    notes = [f"base {b.name} names no image: a pod needs one, so its cells are not in these Jobs"
             for b in spec.bases if not b.image]
    if not imaged:
        raise ConfigError(str(f.config), "bases", "no base names an image, and a pod runs an image",
                          "give the bases image: (the base image becomes the pod's image)")
    for b in imaged:
        if b.python is None:
            raise ConfigError(str(f.config), f"bases.{b.name}.python", "a pod runs the venv backend inside the "
                              "base image, which needs the base's interpreter named", 'add python: "3.11" (a '
                              "version, python3.11 in the image) or a path")
        clash = [o.name for o in spec.bases if o.name.startswith(b.name + "-")]
        if clash:
            raise ConfigError(str(f.config), f"bases.{b.name}", f"the cells of base {clash[0]} match "
                              f"`{b.name}-*` too, so the Job of {b.name} would run them", "rename one base")
    # A base with fewer cells than N gets as many shards as it has cells: no shard is empty (merge
    # refuses a directory without records, as it would a shard that never ran).
    per_base = Counter(c.base for c in cells.plan(spec).cells)
    notes += [f"base {b.name} has no cell (all excluded): no Job" for b in imaged if not per_base[b.name]]
    imaged = [b for b in imaged if per_base[b.name]]
    digest = hashlib.sha256(matrix_text.encode()).hexdigest()[:12]
    run = f"k8s-{digest}"
    labels = {RUN_LABEL: run}
    install = install or (f"python3 -m pip install --quiet --target {K8S_TOOL} "
                          + shlex.quote(f"compat-matrix=={_version()}"))
    configmap = _k8s_name("compat-matrix", digest)
    claim = "compat-matrix-results"
    volumes = [{"name": "matrix", "configMap": {"name": configmap}},
               {"name": "results", "persistentVolumeClaim": {"claimName": claim}},
               {"name": "tool", "emptyDir": {}}]
    mounts = [{"name": "matrix", "mountPath": str(Path(K8S_CONFIG).parent), "readOnly": True},
              {"name": "results", "mountPath": K8S_RESULTS},
              {"name": "tool", "mountPath": K8S_TOOL}]
    env = {"COMPAT_MATRIX_CONFIG": K8S_CONFIG, "COMPAT_MATRIX_RESULTS": K8S_RESULTS, "PYTHONPATH": K8S_TOOL}
    as_of = ["--as-of", f.as_of.isoformat()] if f.as_of else []

    def pod(name: str, image: str, command: list[str], extra_env: Mapping[str, str], cpu: int,
            role: dict[str, str]) -> dict[str, object]:
        return {"metadata": {"labels": {**labels, **role}},
                "spec": {"restartPolicy": "Never", "volumes": volumes,
                         "initContainers": [{"name": "install", "image": image, "command": ["sh", "-c", install],
                                             "volumeMounts": [mounts[2]]}],
                         "containers": [{"name": name, "image": image, "command": command,
                                         "env": _env({**env, **extra_env}), "volumeMounts": mounts,
                                         "resources": {"requests": {"cpu": str(cpu)}}}]}}

    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": configmap, "labels": labels},
         "data": {Path(K8S_CONFIG).name: matrix_text}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "labels": labels},
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": storage}}}}]
    shard_dirs = []
    for b in imaged:
        n = min(f.n, per_base[b.name])
        role = {ROLE_LABEL: "shard", "org.compat-matrix.base": _k8s_name(b.name)}
        results = f"$(COMPAT_MATRIX_RESULTS)/shards/{b.name}/shard-{{index}}"
        shard_dirs += [f"$(COMPAT_MATRIX_RESULTS)/shards/{b.name}/shard-{k}" for k in range(1, n + 1)]
        command = ["python3", "-m", "matrix", "run", "--config", "$(COMPAT_MATRIX_CONFIG)", *as_of,
                   "--select", f"{b.name}-*", "--shard", "auto", "--results", results, "--backend", "venv",
                   "--jobs", str(f.jobs), "--resume", *f.run_args]
        docs.append({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": _k8s_name("compat-matrix", b.name), "labels": {**labels, **role}},
            "spec": {
                "completionMode": "Indexed", "completions": n, "parallelism": min(parallelism or n, n),
                "backoffLimitPerIndex": backoff_per_index,
                "podFailurePolicy": {"rules": [
                    # bad input fails the index at once: a retry would meet the same input
                    {"action": "FailIndex", "onExitCodes": {"containerName": "shard", "operator": "In",
                                                            "values": [2]}},
                    # a preempted or evicted pod is no failure of the shard: run it again, uncounted
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                    # infra (3), or SIGTERM (143): retried, up to backoffLimitPerIndex
                    {"action": "Count", "onExitCodes": {"containerName": "shard", "operator": "In",
                                                        "values": [3, 143]}}]},
                "template": pod("shard", b.image or "", command, {SHARDS_ENV: str(n)}, f.jobs, role)}})
    merge = ["python3", "-m", "matrix", "merge", "--config", "$(COMPAT_MATRIX_CONFIG)", *as_of,
             "--results", "$(COMPAT_MATRIX_RESULTS)/table", *(["--allow-partial"] if notes else []), *shard_dirs]
    role = {ROLE_LABEL: "merge"}
    docs.append({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": _k8s_name("compat-matrix-merge", digest), "labels": {**labels, **role}},
        "spec": {"backoffLimit": 0, "template": pod("merge", imaged[0].image or "", merge, {}, 1, role)}})
    return docs, notes


def _version() -> str:
    from matrix import __version__

    return __version__


def k8s_yaml(docs: Sequence[Mapping[str, object]], notes: Sequence[str], f: Fanout) -> str:
    head = [f"# compat-matrix on Kubernetes: {f.n} shards per base image of {f.config}.",
            "#   kubectl apply -f THIS-FILE --selector 'org.compat-matrix.role!=merge'",
            "#   kubectl wait job --selector org.compat-matrix.role=shard --for=condition=Complete --timeout=24h",
            "#   kubectl apply -f THIS-FILE --selector org.compat-matrix.role=merge",
            "# (a failed index leaves its Job Failed: the merge then lists that shard's cells as missing, exit 3).",
            "# The init container installs compat-matrix into the pod (change it with --install CMD).",
            *(f"# note: {n}" for n in notes)]
    import yaml  # here: every run imports this module, and a re-run loads no YAML parser (inputs.py)

    class Plain(yaml.SafeDumper):
        """Safe YAML without anchors and aliases (the pods share their volume lists; kubectl and
        reviewers read each object whole)."""

        def ignore_aliases(self, data: object) -> bool:
            return True

    body = yaml.dump_all(list(docs), Dumper=Plain, sort_keys=False, width=1000, default_flow_style=False)
    return "\n".join(head) + "\n" + body


def matrix_text(config: Path) -> str:
    """The matrix file as it is (for the ConfigMap the pods read it from)."""
    try:
        return config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(config), "--config", f"cannot read it: {e}", "give the matrix file") from None
