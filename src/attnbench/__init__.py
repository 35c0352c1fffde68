"""attnbench: which attention implementation to use on your hardware, with numbers you can trust."""

__version__ = "0.1.0"
