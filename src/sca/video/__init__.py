"""Video: read and write videos (PyAV), track prompted objects through the frames, caption them on keyframes."""
