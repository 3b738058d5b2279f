"""The experiment folder: logs, configuration, checkpoints, plots and validation images, written atomically."""
