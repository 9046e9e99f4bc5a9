#!/usr/bin/env bash
# Create the two peer virtual environments used by the performance benchmark:
#
#   benchmarks/.venvs/atomai   AtomAI 0.8.1 (--no-deps) + only what its dklGPR path imports, torch==2.13.0 (CPU)
#   benchmarks/.venvs/gpax     gpax 0.1.9 (--no-deps) + jax/jaxlib 0.6.2, numpyro 0.19.0, dm-haiku
#
# Both also get numpy, scipy and h5py. Idempotent: a venv whose marker file (.complete) exists is skipped;
# a half-built one (no marker) is deleted and rebuilt. Pass --force to rebuild both.
# Never installs into the system Python. See benchmarks/PEERS_NOTES.md for the reasons behind each pin.
#
# Every dependency is pinned by benchmarks/peers_lock_{atomai,gpax}.txt (pip constraints: the exact versions
# this script installed on 2026-11-25); PEERS_LOCK=0 installs the newest allowed versions instead.
#
# Usage:  bash benchmarks/install_peers.sh [--force] [atomai] [gpax]
#         PYTHON=python3.11 PEERS_VENVS=/some/dir bash benchmarks/install_peers.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="${PEERS_VENVS:-$HERE/.venvs}"
PEERS_LOCK="${PEERS_LOCK:-1}"
PYTHON="${PYTHON:-python3.11}"
FORCE=0
WANT=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        atomai|gpax) WANT+=("$arg") ;;
        *) echo "install_peers.sh: unknown argument '$arg' (expected --force, atomai, gpax)" >&2; exit 2 ;;
    esac
done
[ ${#WANT[@]} -eq 0 ] && WANT=(atomai gpax)

command -v "$PYTHON" >/dev/null || { echo "install_peers.sh: $PYTHON not found (set PYTHON=...)" >&2; exit 2; }
mkdir -p "$VENVS"
# keep the venvs out of git even if the repo-level .gitignore does not list them
[ -f "$VENVS/.gitignore" ] || echo '*' > "$VENVS/.gitignore"

export PIP_DISABLE_PIP_VERSION_CHECK=1

# --- exact pins --------------------------------------------------------------------------------------------
TORCH_SPEC="torch==2.13.0"            # CPU wheel on local disk; ANY other torch spec may pull multi-GB CUDA builds
ATOMAI_SPEC="atomai==0.8.1"
GPAX_SPEC="gpax==0.1.9"
JAX_PINS=("jax==0.6.2" "jaxlib==0.6.2" "numpyro==0.19.0")
# what atomai's import chain (atomai/__init__ -> trainers/predictors/models/utils) needs, minus torchvision.
# mendeleev: atomai.utils/__init__ imports atomai.utils.graphx, which imports mendeleev at module level;
# atomai pins mendeleev<=0.6.1, whose module imports six without declaring it.
# opencv-python-headless stands in for the declared opencv-python (same cv2 module, no GUI libs).
ATOMAI_DEPS=(gpytorch matplotlib scikit-learn scikit-image opencv-python-headless pandas progressbar2 networkx
             "mendeleev==0.6.1" six)
COMMON=(numpy scipy h5py)

new_venv() {  # name
    local v="$VENVS/$1"
    if [ -f "$v/.complete" ] && [ "$FORCE" -eq 0 ]; then
        echo "== $1: present ($v), skipping (use --force to rebuild)"
        return 1
    fi
    rm -rf "$v"
    echo "== $1: creating $v with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$v"
    "$v/bin/python" -m pip install -q --upgrade pip wheel
    return 0
}

constraints() {  # name -> writes $VENVS/name/constraints.txt: the lock file (or nothing) + the must-have pins
    local name="$1" v="$VENVS/$1"; shift
    : > "$v/constraints.txt"
    if [ "$PEERS_LOCK" != "0" ]; then
        grep -v '^#' "$HERE/peers_lock_$name.txt" >> "$v/constraints.txt"
    fi
    printf '%s\n' "$@" >> "$v/constraints.txt"
}

freeze() {  # name
    local v="$VENVS/$1"
    "$v/bin/python" -m pip freeze --all > "$v/versions.txt"
    echo "== $1: installed versions written to $v/versions.txt"
}

install_atomai() {
    local v="$VENVS/atomai" py="$VENVS/atomai/bin/python"
    new_venv atomai || return 0
    # constraints (lock + torch pin) on every call so that no later step can swap the CPU torch for another build
    constraints atomai "$TORCH_SPEC"
    "$py" -m pip install -q -c "$v/constraints.txt" "$TORCH_SPEC"
    "$py" -m pip install -q -c "$v/constraints.txt" "${COMMON[@]}" "${ATOMAI_DEPS[@]}"
    "$py" -m pip install -q --no-deps "$ATOMAI_SPEC"

    # torchvision: atomai imports it at module level (atomai.nets.blocks, atomai.models.dgm.vae), dklGPR never
    # calls it. Try the real PyPI wheel matching torch 2.13 first (--no-deps so it cannot touch torch); if it
    # does not import, remove it and put the labelled import-only stand-in on sys.path via a .pth file.
    local site
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    if "$py" -m pip install -q --no-deps -c "$v/constraints.txt" "torchvision==0.28.0" \
        && "$py" -c "import torchvision, torchvision.models, torchvision.utils" >/dev/null 2>&1; then
        echo "== atomai: real torchvision imports"
    else
        echo "== atomai: PyPI torchvision does not import beside torch 2.13.0 -> using import-only stand-in" \
             "benchmarks/torchvision_stub (LABEL RESULTS)"
        "$py" -m pip uninstall -q -y torchvision >/dev/null 2>&1 || true
        echo "$HERE/torchvision_stub" > "$site/dkl4dstem_torchvision_stub.pth"
    fi
    "$py" -c "import atomai, torch, gpytorch; from atomai.models import dklGPR; \
print('atomai', atomai.__version__, 'torch', torch.__version__, 'gpytorch', gpytorch.__version__, \
'cuda', torch.cuda.is_available())"
    freeze atomai
    touch "$v/.complete"
}

install_gpax() {
    local v="$VENVS/gpax" py="$VENVS/gpax/bin/python"
    new_venv gpax || return 0
    constraints gpax "${JAX_PINS[@]}"
    # gpax 0.1.9 declares flax and jaxopt too; viDKL only imports haiku (jaxopt: optional, acquisition.optimize)
    "$py" -m pip install -q -c "$v/constraints.txt" "${COMMON[@]}" "${JAX_PINS[@]}" dm-haiku matplotlib
    "$py" -m pip install -q --no-deps "$GPAX_SPEC"
    "$py" -c "import gpax, jax, jaxlib, numpyro, haiku; \
print('gpax', gpax.__version__, 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, \
'numpyro', numpyro.__version__, 'haiku', haiku.__version__, 'devices', jax.devices())"
    freeze gpax
    touch "$v/.complete"
}

for p in "${WANT[@]}"; do
    "install_$p"
done
echo "== done: $VENVS"
