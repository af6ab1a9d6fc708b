"""Data files the runtime ships: OpenAI CLIP's BPE vocabulary (see LICENSE-CLIP.txt). A package so the wheel carries
them and importlib.resources finds them."""
