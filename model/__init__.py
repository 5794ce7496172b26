"""Torch modules of the LLaMA-Omni 2 architecture (no I/O)."""
