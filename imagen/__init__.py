"""IMAGEN: a self-hostable, multi-user image-generation service."""

__version__ = "0.1.0"
