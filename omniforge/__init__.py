"""omniforge: the training factory for LLaMA-Omni 2 style spoken chatbots."""

__version__ = "0.1.0"
