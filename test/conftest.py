"""Shared pytest set-up: keep ROS 2 traffic on this machine, in a domain of its own."""

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
os.environ.setdefault("MPLBACKEND", "Agg")
