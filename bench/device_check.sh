#!/usr/bin/env bash
# The device check in one call on the GPU machine (see docs/device.md):
#
#   bash bench/device_check.sh [SECONDS]     # SECONDS: the whole check's limit, default 270
#
# Its parts, in order, each under its own time limit (and what is left of SECONDS), so
# that one failing or cut still leaves the others' output:
#   install    the wheels of $WHEELS (default .whl, made by bench/device_wheels.sh) into a
#              temporary folder put on PYTHONPATH (no index, no deps);
#   versions   Python, jax, its plugins, flax, optax, orbax and the rest, and the devices
#              JAX sees (it says so where it finds no GPU);
#   smoke      `python -m bench.smoke`: each model's steps compiled and run once;
#   accelerator `python -m bench.accelerator` (--quick for both where there is no GPU).
# Each part's output goes to $OUT/PART.log and the terminal, the parts' outcomes to
# $OUT/summary.txt ($OUT: default a new temporary folder). Exits 1 if a part failed.
# $PYTHON: the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:-270}
if ! [[ $budget =~ ^[0-9]+$ ]]; then
  echo "device_check: SECONDS must be a whole number of seconds, not '$budget'" >&2
  exit 2
fi
deadline=$((SECONDS + budget))
out=${OUT:-$(mktemp -d -t device_check.XXXXXX)}
python=${PYTHON:-python3}
wheels=${WHEELS:-.whl}
tmp=$(mktemp -d -t device_check_tmp.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
: > "$out/summary.txt"
export PYTHONUNBUFFERED=1
# Programs the smoke test compiled, the accelerator's runs find again (where they are the same).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$tmp/jax_cache}
failed=0

outcome() {  # outcome PART TEXT: one line of the summary
  printf '%-12s %s\n' "$1" "$2" | tee -a "$out/summary.txt"
}

part() {  # part NAME CAP COMMAND...: COMMAND for at most CAP seconds (and what is left), its output in NAME.log
  local name=$1 cap=$2 start=$SECONDS
  shift 2
  local limit=$((deadline - SECONDS - 10))  # 10: the 5 s a cut part has to end after TERM, and slack
  ((limit > cap)) && limit=$cap
  if ((limit < 5)); then
    outcome "$name" 'not run: no time left'
    failed=1
    return
  fi
  echo "== $name (at most $limit s)"
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  if ((rc == 0)); then
    outcome "$name" "ok in $((SECONDS - start)) s"
  else
    failed=1
    if ((rc == 124 || rc == 137)); then
      outcome "$name" "cut at its limit of $limit s (its output so far in $name.log)"
    else
      outcome "$name" "FAILED with status $rc after $((SECONDS - start)) s (see $name.log)"
    fi
  fi
}

shopt -s nullglob
found=("$wheels"/*.whl)
if ((${#found[@]})); then
  part install 60 "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$tmp/site" "${found[@]}"
  export PYTHONPATH=$tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  outcome install "nothing to install: no wheels in $wheels (bench/device_wheels.sh makes them)"
fi

part versions 60 "$python" -c '
import importlib.metadata as md, os, platform, jax
names = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "flax", "optax", "orbax-checkpoint",
         "tensorstore", "numpy", "ml_dtypes", "tensorflow-datasets", "grain", "array_record", "ml_collections",
         "tensorboardX", "simplejpeg")
def version(name):
  try:
    return md.version(name)
  except md.PackageNotFoundError:
    return "-"
print("python", platform.python_version(), "|", ", ".join(f"{n} {version(n)}" for n in names))
devices = jax.devices()
print("devices:", ", ".join(f"{d.id}: {d.device_kind} ({d.platform})" for d in devices))
print("backend:", jax.default_backend())
if jax.default_backend() != "gpu":
  print(f"NO GPU FOUND: JAX runs on its {jax.default_backend()} backend, so no figure here is a GPU figure")
  if os.path.exists("/dev/nvidiactl"):
    print("  this machine has an NVIDIA GPU that JAX does not use: see jax-cuda13-plugin above")
'

quick=()
grep -qx 'backend: gpu' "$out/versions.log" 2>/dev/null || quick=(--quick)
part smoke 90 "$python" -m bench.smoke "${quick[@]}"
part accelerator "$budget" "$python" -m bench.accelerator "${quick[@]}"
echo "device_check: everything is in $out"
exit $failed
