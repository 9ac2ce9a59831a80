"""rclpy nodes of mnemobot's ROS 2 graph (need a ROS 2 ``rclpy``; the rest of :mod:`mnemobot.ros2` does not)."""
