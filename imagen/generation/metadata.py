"""A1111's `parameters` PNG text chunk, written into a download when the user's setting asks for it.

Stored outputs stay as generated (no prompt inside the file); the text is added to the bytes as they are served, so
turning the setting off applies to every image at once."""

from __future__ import annotations

import struct
import zlib

from imagen.generation.models import Generation, Output

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SAMPLERS = {"euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras",
            "ddim": "DDIM", "unipc": "UniPC", "lcm": "LCM"}


def parameters_text(gen: Generation, output: Output) -> str:
    """The text A1111 writes ("prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: Euler, ..."), which A1111,
    InvokeAI and IMAGEN's own A1111 importer read back."""
    params = gen.params or {}
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields = [("Steps", params.get("steps")), ("Sampler", SAMPLERS.get(params.get("scheduler", ""))),
              ("CFG scale", params.get("guidance")), ("Seed", output.seed),
              ("Size", f"{output.width}x{output.height}"), ("Model hash", gen.checkpoint_sha256[:10]),
              ("Model", gen.checkpoint), ("Denoising strength", params.get("strength"))]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None and v != ""))
    return "\n".join(lines)


def with_parameters(png: bytes, text: str) -> bytes:
    """The PNG with a `parameters` text chunk right after its header (tEXt when Latin-1 can hold it, else iTXt)."""
    if not png.startswith(PNG_MAGIC):
        return png
    try:
        kind, data = b"tEXt", b"parameters\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        kind, data = b"iTXt", b"parameters\0\0\0\0\0" + text.encode("utf-8")
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    end_of_header = len(PNG_MAGIC) + 8 + struct.unpack(">I", png[8:12])[0] + 4  # length, type, IHDR data, CRC
    return png[:end_of_header] + chunk + png[end_of_header:]
