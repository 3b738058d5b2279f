"""Training: the process runtime (one device, DataParallel, DDP), the epoch loop, validation, resumable state."""
