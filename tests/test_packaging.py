"""What the package ships and pulls in: the CLIP vocabulary is its own file, importing the runtime drags in no
torchvision, and the deploy files name only real commands and settings."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from imagen.inference import clip_tokenizer as clip_tokenizer_module
from imagen.inference.spec import ModelLoadError

ROOT = Path(__file__).resolve().parent.parent
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


# ---------------------------------------------------------------------------------------------------------------
# The CLIP vocabulary


def test_clip_vocabulary_ships_in_the_package_with_its_licence() -> None:
    vocab = resources.files("imagen.inference.vocab")
    data = vocab.joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == VOCAB_SHA256  # OpenAI CLIP's file, unchanged
    assert gzip.decompress(data).decode("utf-8").startswith("\"bpe_simple_vocab_16e6.txt#version: 0.2\n")
    licence = vocab.joinpath("LICENSE-CLIP.txt").read_text(encoding="utf-8")
    assert "Copyright (c) 2021 OpenAI" in licence and "MIT License" in licence


def test_tokenizer_reads_the_vocabulary_from_imagen_not_open_clip() -> None:
    # A fresh process that refuses to import open_clip and cannot find its distribution still builds the tokenizer.
    out = run_python(
        "import sys; from importlib import metadata\n"
        "sys.modules['open_clip'] = None\n"
        "real = metadata.distribution\n"
        "def no_open_clip(name):\n"
        "    if name.replace('-', '_').lower() == 'open_clip_torch': raise metadata.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "metadata.distribution = no_open_clip\n"
        "from imagen.inference.clip_tokenizer import clip_tokenizer\n"
        "print(clip_tokenizer('clip_l')('a photo of a cat').input_ids)\n")
    assert out.strip() == "[49406, 320, 1125, 539, 320, 2368, 49407]"


def test_missing_vocabulary_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clip_tokenizer_module, "_VOCAB_FILE", "no-such-file.txt.gz")
    with pytest.raises(ModelLoadError, match=r"imagen\.inference\.vocab/no-such-file\.txt\.gz is missing.*reinstall"):
        clip_tokenizer_module._read_bpe_file()


def test_damaged_vocabulary_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clip_tokenizer_module, "_VOCAB_FILE", "LICENSE-CLIP.txt")  # not gzip
    with pytest.raises(ModelLoadError, match=r"missing or damaged.*reinstall imagen"):
        clip_tokenizer_module._read_bpe_file()


def test_importing_the_runtime_pulls_in_no_torchvision_timm_or_open_clip() -> None:
    out = run_python(
        "import sys\n"
        "import imagen.inference, imagen.inference.clip_tokenizer, imagen.inference.single_file\n"
        "from imagen.inference.clip_tokenizer import clip_tokenizer\n"
        "clip_tokenizer('clip_g')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torchvision', 'timm', 'open_clip'}))\n")
    assert out.strip() == "[]"


def test_open_clip_is_no_dependency() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    every = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    names = {d.split("=")[0].split("[")[0].strip().lower().replace("-", "_") for d in every}
    assert "torch" in names
    assert not {"open_clip_torch", "timm", "torchvision"} & names
