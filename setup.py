"""For `colcon build` on a ROS 2 host (ament_python runs setup.py); pip reads pyproject.toml."""

from setuptools import setup

setup()
