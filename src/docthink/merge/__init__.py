"""Streaming task arithmetic over safetensors checkpoints: `base + alpha * (tuned - base)`."""
