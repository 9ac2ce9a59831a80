#!/usr/bin/env bash
# A ROS 2 Jazzy process reads the scene graph of mnemobot's (Kilted) memory node: the two
# distributions interoperate over Fast DDS. A manual check (about 1 minute): it builds a second
# venv with the ros-jazzy-* wheels, starts `mnemobot ros up --sim`, and subscribes late (the
# MarkerArray is transient local).
#
#   bash scripts/jazzy_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
JV="${JAZZY_VENV:-build/jazzy-venv}"
[ -x "$JV/bin/python" ] || python3 -m venv "$JV"
"$JV/bin/python" -m pip -q --disable-pip-version-check install 'ros-jazzy-rclpy[fastrtps]' ros-jazzy-visualization-msgs 2>&1 \
  | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((100 + RANDOM % 100))}"
.venv/bin/mnemobot ros up --sim > build/jazzy-check-graph.log 2>&1 &
graph=$!
trap 'kill -INT $graph 2>/dev/null; wait $graph 2>/dev/null || true' EXIT
sleep 15
# each venv's Python sets up its own ROS libraries: do not inherit the other's start-up marker
env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$JV/bin/python" scripts/jazzy_scene_graph.py
