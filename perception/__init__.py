"""Senses: RGB-D observations -> 3D object observations."""
