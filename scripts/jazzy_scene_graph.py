"""A ROS 2 Jazzy process (rclpy 7.x from the ros-jazzy-* wheels) subscribing to mnemobot's scene graph
(run by scripts/jazzy_check.sh, with the Jazzy venv's Python)."""
import sys
import time
from importlib.metadata import version

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import MarkerArray

rclpy.init()
node = rclpy.create_node("jazzy_viewer")
got = []
qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
node.create_subscription(MarkerArray, "/mnemobot/scene_graph", got.append, qos)
deadline = time.monotonic() + 60
while not got and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.5)
if not got:
    print("no MarkerArray within 60 s")
    sys.exit(1)
m = got[-1]
texts = sorted({mk.text for mk in m.markers if mk.text})
print(f"rclpy {version('ros-jazzy-rclpy')} (Jazzy): MarkerArray with {len(m.markers)} markers in frame "
      f"{m.markers[-1].header.frame_id!r}: {texts}")
