"""ROS 2 launch files for running mnemobot's organs as nodes on a robot (``*.launch.py``)."""
