"""SCA: Segment and Caption Anything."""

__version__ = "0.1.0"
