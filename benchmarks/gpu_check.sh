#!/usr/bin/env bash
# GPU cells where a GPU is lent: a 2-4 cell matrix of torch builds from a directory of local
# wheels, on a base that asks for GPUs, through the real tool (docker backend by default). Prints
# each cell's verdict and the cuda probe's facts, then checks what a GPU machine must show
# (benchmarks/GPU.md): a CUDA build passes on the device, a CPU build is "torch falls back to CPU".
#
#   WHEELS=/path/to/wheels bash benchmarks/gpu_check.sh
#
# Settings (environment):
#   WHEELS      directory of wheels (default $PIP_FIND_LINKS): torch-*+cuXYZ and/or torch-*+cpu for
#               the base's Python; the nvidia-* wheels a CUDA build needs may be there too (else the
#               index serves them: gigabytes)
#   TORCH_PINS  the torch versions to test, space-separated (default: up to 3 found in WHEELS)
#   BASE_IMAGE  the base (default compat-matrix-test/bookworm-py311:local; an nvidia/cuda image with
#               python3.11 works too); PY_VERSION its Python (default 3.11)
#   GPUS        the base's gpus: value (default all; e.g. 1 or '["0"]')
#   BACKEND     docker (default) or venv (pyenv's PY_VERSION on this host, CUDA_VISIBLE_DEVICES)
#   PYTHON      an interpreter with compat-matrix installed (default /work/venv/bin/python, else python3)
#   OUT         where the matrix file, results and the report go (default a new temporary directory)
# Exit status: 0 when the GPU machine showed what it must; 1 when a cell did not; 3 when the machine
# has no usable GPU (every cell infra-error: no GPU on this engine/host); 2 for bad settings.
set -euo pipefail

WHEELS=${WHEELS:-${PIP_FIND_LINKS:-}}
BASE_IMAGE=${BASE_IMAGE:-compat-matrix-test/bookworm-py311:local}
PY_VERSION=${PY_VERSION:-3.11}
GPUS=${GPUS:-all}
BACKEND=${BACKEND:-docker}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x /work/venv/bin/python ]]; then PYTHON=/work/venv/bin/python; else PYTHON=python3; fi
fi

die() { echo "gpu_check: $*" >&2; exit 2; }
# all, a count or a YAML list of ids; the tool validates it (exit 2 naming bases.gpu.gpus).
if [[ $GPUS =~ ^[0-9]+$ || $GPUS == all || $GPUS =~ ^\[[^\]]*\]$ ]]; then gpus_yaml=$GPUS; else die "GPUS=$GPUS"; fi
[[ -n $WHEELS && -d $WHEELS ]] || die "WHEELS=${WHEELS:-(unset)} is not a directory of wheels"
case $BACKEND in docker | venv) ;; *) die "BACKEND=$BACKEND: docker or venv" ;; esac
"$PYTHON" -c 'import matrix' 2>/dev/null || die "$PYTHON has no compat-matrix (pip install -e .)"
OUT=${OUT:-$(mktemp -d -t compat-matrix-gpu-XXXXXX)}

tag="cp${PY_VERSION/./}"
if [[ -z ${TORCH_PINS:-} ]]; then
  # torch-2.4.1+cu121-cp311-cp311-linux_x86_64.whl -> 2.4.1+cu121 (at most 3, CUDA builds first)
  TORCH_PINS=$(find "$WHEELS" -maxdepth 1 -name "torch-*-${tag}-*.whl" -printf '%f\n' \
    | sed -E 's/^torch-([^-]+)-.*/\1/' | sort -u | sort -t+ -k2,2r | head -3 | tr '\n' ' ')
fi
[[ -n ${TORCH_PINS// /} ]] || die "no torch-*-${tag}-*.whl in $WHEELS and no TORCH_PINS"
read -r -a pins <<<"$TORCH_PINS"
((${#pins[@]} >= 1 && ${#pins[@]} <= 4)) || die "give 1 to 4 torch pins (TORCH_PINS), got ${#pins[@]}"

mkdir -p "$OUT"
quoted=$(printf '"%s", ' "${pins[@]}")
cat >"$OUT/matrix.yaml" <<EOF
# written by benchmarks/gpu_check.sh
bases:
  gpu: {image: "$BASE_IMAGE", python: "$PY_VERSION", gpus: $gpus_yaml}
packages:
  torch: [${quoted%, }]
  numpy: ["2.2.6"]
install: {find_links: ["$WHEELS"]}
limits: {timeout_s: 600, memory: 16g}
EOF
echo "gpu_check: $OUT/matrix.yaml (${#pins[@]} cell(s): torch ${pins[*]}; gpus: $GPUS; backend $BACKEND)"

# The shipped registry (its GPU examples name the failures), copied: a run writes known-good.yaml beside it.
cp "$(dirname "$0")/../registry/known-issues.yaml" "$OUT/known-issues.yaml"
set +e
COMPAT_MATRIX_CACHE="$OUT/cache" "$PYTHON" -m matrix run --config "$OUT/matrix.yaml" --results "$OUT/results" \
  --backend "$BACKEND" --rerun --registry "$OUT/known-issues.yaml"
code=$?
set -e
echo "gpu_check: compat-matrix run exited $code"
[[ -f $OUT/results/matrix.csv ]] || { echo "gpu_check: no table written" >&2; exit "$((code == 0 ? 1 : code))"; }

"$PYTHON" - "$OUT/results" <<'EOF'
"""Each cell's verdict and the cuda probe's facts; then what a GPU machine must show."""
import csv
import json
import sys
from pathlib import Path

results = Path(sys.argv[1])
with open(results / "matrix.csv", newline="") as f:
    rows = list(csv.DictReader(f))
failures, no_gpu = [], 0
for row in rows:
    cell, outcome, error = row["cell"], row["outcome"], row.get("error", "")
    print(f"\n{cell}: {outcome}" + (f" - {error}" if error else ""))
    log = results / "logs" / cell / "probes.jsonl"
    facts = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("probe") == "cuda":
                result = record.get("result") or {}
                facts = result.get("facts") or {}
                print("  cuda probe: %s%s" % (result.get("status"), " - " + result["error"] if result.get("error") else ""))
    for key in ("torch", "torch_cuda", "driver_cuda", "cuda_visible_devices", "device_count", "devices", "arch_list",
                "matmul_max_abs_error", "cudnn", "conv_max_abs_error", "nccl"):
        if key in facts:
            print(f"  {key}: {json.dumps(facts[key])}")
    if outcome == "infra-error" and error.startswith("no GPU on this"):
        no_gpu += 1
        continue
    cpu_build = "+cpu" in cell or facts.get("torch_cuda", "x") is None
    if cpu_build:
        if not (outcome == "import-error" and "torch falls back to CPU" in error):
            failures.append(f"{cell}: a CPU build must be 'torch falls back to CPU', got {outcome}: {error}")
    elif outcome == "pass":
        if not facts.get("device_count") or "matmul_max_abs_error" not in facts or "cudnn" not in facts:
            failures.append(f"{cell}: passed without the cuda probe's facts (device count, matmul, cuDNN): {facts}")
    else:
        failures.append(f"{cell}: a CUDA build did not pass on this GPU machine: {outcome}: {error}")

print()
if no_gpu == len(rows):
    print("gpu_check: no usable GPU here: every cell is infra-error (no GPU on this engine/host), as it must be")
    sys.exit(3)
if no_gpu:
    failures.append(f"{no_gpu} cell(s) infra-error for want of a GPU while others ran: the machine is flaky")
for f in failures:
    print("gpu_check: FAIL " + f)
print("gpu_check: %s" % ("OK: the GPU machine showed what it must" if not failures else f"{len(failures)} failure(s)"))
sys.exit(1 if failures else 0)
EOF
