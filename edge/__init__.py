"""Edge node for detecting objects thrown or dropped from high-rise windows."""

__version__ = "0.1.0"
