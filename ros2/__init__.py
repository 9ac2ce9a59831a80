"""ROS 2 layer (nerves): message types, conversions, TF, rosbag2 recording and reading.

Everything here runs without a ROS 2 installation: messages are encoded and decoded with the
``rosbags`` typestores (the ``ros`` extra). The custom message types live once, as ``.msg``
files of the ament_cmake package ``ros2/interfaces/mnemobot_interfaces``, which builds on a
robot with ``colcon build`` and is loaded into the typestore here.

The live graph needs a ROS 2 ``rclpy``: :mod:`mnemobot.ros2.nodes` (``sim_robot``, ``robot_bridge``
and the helpers they share) and :class:`mnemobot.ros2.ros_robot.RosRobot`, the robot interface the
orchestrator drives over topics.
"""
