"""The core: train loop, train state, optimiser, parallelism, distributed start-up, checkpoints, metrics and logging. It names no method."""
