#!/usr/bin/env bash
# mnemobot set-up: Debian packages, a virtual environment, torch (CPU) first, then the package.
#
#   bash scripts/setup.sh demo   # the simulator only (under a minute), then a demo simulated episode
#   bash scripts/setup.sh test   # set up everything (if needed) and run the test suite
#   bash scripts/setup.sh        # set up everything only
#
# Idempotent: a second run reinstalls nothing unless pyproject.toml changed. `demo` installs
# only what a simulated episode needs (the `sim` extra); a full set-up also serves the demo.
# Environment: MNEMOBOT_VENV (default .venv), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${MNEMOBOT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
LLAMA_CPP_VERSION="0.3.36"  # keep equal to the pin in pyproject.toml's llm extra

log() { printf '[setup] %s\n' "$*"; }

# pip prints one warning per missing local index folder on some machines; keep the log readable.
quiet_pip() { "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

debian_packages() {
  # libusb-1.0-0: open3d's native library links it. python3-venv: Debian splits venv out.
  # cmake: the ROS 2 interface packages are generated and built at set-up (scripts/ros_interfaces.sh).
  # build-essential: llama-cpp-python builds from source (pip fetches cmake/ninja itself if missing).
  # $1 = demo: python3-venv only.
  local missing=()
  if [ "${1:-}" != demo ]; then
    ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
    { command -v gcc && command -v g++ && command -v make; } >/dev/null 2>&1 || missing+=(build-essential)
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)  # the ROS 2 interfaces are built with rosidl
  fi
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  if [ "${#missing[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null; then
      log "installing Debian packages: ${missing[*]}"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      log "please install the equivalents of: ${missing[*]}"
    fi
  fi
}

python_env() {
  local stamp="$VENV/.mnemobot-installed"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "environment $VENV is up to date"
    return
  fi
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
  # torch first and pinned, so nothing later pulls a multi-GB CUDA build.
  log "installing torch==$TORCH_VERSION"
  quiet_pip "${pip[@]}" install "torch==$TORCH_VERSION"
  # llama.cpp compiles for the build machine's CPU by default, and pip caches that wheel: a wheel
  # built on a newer CPU dies with an illegal instruction here. Build it for any AVX2 x86-64 CPU,
  # never from the cache.
  if [ "$(uname -m)" = "x86_64" ]; then
    log "building llama-cpp-python for AVX2 CPUs (a few minutes)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      quiet_pip "${pip[@]}" install --no-cache-dir "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
  fi
  log "installing mnemobot with all extras (editable)"
  quiet_pip "${pip[@]}" install -e ".[all,dev]"
  echo "$want" > "$stamp"
}

demo_env() {
  # The simulator and the package: all a simulated episode with the embedded planner needs.
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  for stamp in "$VENV/.mnemobot-installed" "$VENV/.mnemobot-installed-demo"; do
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
      log "environment $VENV is up to date"
      return
    fi
  done
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  log "installing mnemobot with the simulator (editable; 'setup.sh test' adds the rest)"
  quiet_pip "$VENV/bin/python" -m pip --disable-pip-version-check -q install -e ".[sim]"
  echo "$want" > "$VENV/.mnemobot-installed-demo"
}

if [ "${1:-}" = demo ]; then
  debian_packages demo
  demo_env
else
  debian_packages
  python_env
  bash scripts/ros_interfaces.sh
fi

case "${1:-}" in
  demo)
    log "running a demo episode"
    exec "$VENV/bin/mnemobot" run --task-id fetch --seed 0
    ;;
  test)
    log "running the test suite"
    exec "$VENV/bin/python" -m pytest -q --durations=25
    ;;
  "") log "done: activate with 'source $VENV/bin/activate'" ;;
  *) log "unknown command '$1' (use: demo, test)"; exit 2 ;;
esac
