"""ROS 2 nodes: mnemobot organs as processes on a robot (``python -m mnemobot.ros2.nodes.<name>``)."""
