#!/usr/bin/env bash
# The wheels the GPU machine lacks, for `bench/device_check.sh` there (see docs/device.md).
#
#   bench/device_wheels.sh [DEST]     # DEST: default .whl in the repository (gitignored)
#
# Resolves, for CPython 3.12 on manylinux x86_64, the project's packages that the GPU
# machine lacks (their ranges read from requirements.txt) with all their needs, drops what
# that machine already has, downloads one wheel of each of the rest into DEST (building a
# pure-Python wheel of a need that PyPI serves only as source), checks that DEST and the
# working tree together stay under the device tool's 64 MiB, and prints the `run` call.
# $PYTHON: the Python whose pip it uses (default python3).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=$(realpath -m "${1:-$root/.whl}")
python=${PYTHON:-python3}
limit_mib=64

# The project's requirements that the GPU machine lacks: the wheels' roots.
NEEDED='tensorflow-datasets importlib_resources array_record grain ml_collections simplejpeg tensorboardX'
# Needs that PyPI serves only as source (promise: tensorflow-datasets'): built here as wheels.
SOURCE_ONLY='promise'
# The GPU machine's packages ('cuda' image, read there 2026-11-17; /work/.library/device/KINDS.md):
# never carried, their versions there are used.
GPU_HAS='absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio
h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp'

target=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
for n in $(seq 28 -1 5); do target+=(--platform "manylinux_2_${n}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
pip() { "$python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest" "$work/built"
if [[ $dest == "$root"/* ]] && ! git -C "$root" check-ignore -q "$dest/x.whl"; then
  echo "device_wheels: $dest is not ignored by git, so its wheels would travel twice: add it to .gitignore" >&2
  exit 1
fi

# Requirement lines of NEEDED, as requirements.txt writes them (its comments dropped).
roots=$("$python" - "$root/requirements.txt" "$NEEDED" "$0" <<'EOF'
import re, sys
norm = lambda name: re.sub(r'[-_.]+', '-', name).lower()
needed = {norm(n) for n in sys.argv[2].split()}
lines = [l.split('#')[0].strip() for l in open(sys.argv[1])]
found = {norm(re.match(r'[A-Za-z0-9._-]+', l).group()): l for l in lines if l}
missing = needed - found.keys()
if missing:
  sys.exit(f'device_wheels: {", ".join(sorted(missing))} not in requirements.txt: update NEEDED in {sys.argv[3]}')
print('\n'.join(found[n] for n in sorted(needed)))
EOF
)
mapfile -t roots <<< "$roots"

echo "building the source-only needs: $SOURCE_ONLY"
pip wheel --no-deps --no-binary=:all: -w "$work/built" $SOURCE_ONLY
echo "resolving for CPython 3.12, manylinux x86_64: ${roots[*]}"
pip install --dry-run --ignore-installed --target "$work/target" --find-links "$work/built" \
  --report "$work/report.json" "${target[@]}" "${roots[@]}"

# name==version of each resolved package the GPU machine lacks; wheels in DEST of anything else go.
wanted=$("$python" - "$work/report.json" "$GPU_HAS" "$dest" <<'EOF'
import json, pathlib, re, sys
norm = lambda name: re.sub(r'[-_.]+', '-', name).lower()
has = {norm(n) for n in sys.argv[2].split()}
wanted = {norm(i['metadata']['name']): i['metadata']['version'] for i in json.load(open(sys.argv[1]))['install']}
wanted = {n: v for n, v in wanted.items() if n not in has}
for wheel in pathlib.Path(sys.argv[3]).glob('*.whl'):
  name, version = wheel.name.split('-')[:2]
  if wanted.get(norm(name)) != version:
    wheel.unlink()
print('\n'.join(f'{n}=={v}' for n, v in sorted(wanted.items())))
EOF
)
mapfile -t wanted <<< "$wanted"

pip download --no-deps --find-links "$work/built" -d "$dest" "${target[@]}" "${wanted[@]}"

# The size against the device tool's limit: these wheels and the tree that travels with them.
wheels=$(du -cb "$dest"/*.whl | tail -1 | cut -f1)
tree=$(cd "$root" && git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
       | awk '{s += $1} END {print s + 0}')
echo
ls -l "$dest"/*.whl | awk '{printf "  %8.1f KiB  %s\n", $5 / 1024, $NF}'
total=$((wheels + tree))
awk -v n=${#wanted[@]} -v w=$wheels -v t=$tree -v l=$limit_mib 'BEGIN {
  printf "%d wheels: %.1f MiB; with the working tree (%.1f MiB): %.1f MiB of %d\n", n, w / 2^20, t / 2^20, (w + t) / 2^20, l}'
if ((total >= limit_mib * 1048576)); then
  echo "device_wheels: the wheels and the tree exceed the device tool's $limit_mib MiB: drop untracked files" \
       "from the tree or wheels the GPU machine has (GPU_HAS in $0)" >&2
  exit 1
fi
carry=$(realpath -m --relative-to="$root" "$dest")
echo
echo "On the GPU machine, with the device tool:"
echo "  run(command='bash bench/device_check.sh', carry=['$carry'], timeout_s=360)"
