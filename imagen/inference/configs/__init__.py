"""Packaged per-family settings for single-file checkpoints: what tensor shapes cannot tell."""
