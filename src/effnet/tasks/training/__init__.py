"""The training engine behind ``effnet train``: config schema, data, optimizers, checkpoints, loop."""
