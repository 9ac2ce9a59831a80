"""ROS 2 launch file: the mnemobot node graph on a real robot.

    ros2 launch mnemobot robot.launch.py params:=my_robot.yaml [memory_db:=house.db]

The robot's own drivers provide the camera (RGB-D + camera_info), /tf and /tf_static,
/joint_states and odometry, and take the driver command topics the robot bridge publishes
(``JointTrajectory`` for the arm, ``Twist`` for the base, the gripper command): set their names
in the parameter file (``launch/params/robot.yaml`` is the template). The same graph without
``ros2 launch``: ``mnemobot ros up --params my_robot.yaml``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    params = LaunchConfiguration("params")
    memory_db = LaunchConfiguration("memory_db")
    args = [
        DeclareLaunchArgument("params", default_value=PathJoinSubstitution(
            [FindPackageShare("mnemobot"), "launch", "params", "robot.yaml"]),
            description="parameter file for every node: the robot's topic names, QoS, limits, planner"),
        DeclareLaunchArgument("memory_db", default_value="house.db",
                              description="SQLite file the memory persists to and reloads on restart"),
    ]
    nodes = [
        Node(package="mnemobot", executable="mnemobot-robot-bridge", name="robot_bridge", output="screen",
             parameters=[params]),
        Node(package="mnemobot", executable="mnemobot-memory", name="memory", output="screen",
             parameters=[params, {"memory_db": memory_db}]),
        Node(package="mnemobot", executable="mnemobot-orchestrator", name="orchestrator", output="screen",
             parameters=[params]),
    ]
    return LaunchDescription([*args, *nodes])
