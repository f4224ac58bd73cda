"""The smartpark release version, shared by the hub, the tools and the firmware."""

VERSION = "0.1.0"
