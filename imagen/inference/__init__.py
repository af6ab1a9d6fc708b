"""The inference runtime: job spec + model files -> images + signals. Never touches the database."""

import sys
from importlib import metadata


def _hide_torchvision_built_for_another_torch() -> None:
    """open-clip-torch (installed only for its CLIP vocabulary file) pulls in torchvision. PyPI's torchvision is
    built against CUDA torch and fails to import beside the CPU build, which would break transformers' image
    processors on import; with it hidden they use their PIL backend."""
    try:
        torch_version, torchvision_version = metadata.version("torch"), metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return
    if "+cpu" in torch_version and "+cpu" not in torchvision_version:
        sys.modules.setdefault("torchvision", None)  # type: ignore[arg-type]


_hide_torchvision_built_for_another_torch()
