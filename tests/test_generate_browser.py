"""The generate page's extras in a real headless Chromium (SQLite only, bounded waits): the live preview in the
progress panel, batch count (two runs, two jobs in the queue, consecutive seeds), size presets per model family, the
inpaint mask painter (a painted mask is submitted and the job succeeds), dropping an image onto the input field and a
PNG with A1111 parameters onto the page (the form is filled); axe-core on /generate in light and dark mode, and
screenshots at 390 and 1280 px under $IMAGEN_TEST_ARTIFACTS (default test-artifacts/)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from tests.conftest import signup_payload
from tests.test_browser import CHROMIUM, chromium, live, open_page, playwright_sync  # noqa: F401 (fixtures)
from tests.test_generate_extras import hold_first_preview
from tests.test_studio_browser import AXE, AXE_RUN

expect = playwright_sync.expect
ARTIFACTS = Path(os.environ.get("IMAGEN_TEST_ARTIFACTS", "test-artifacts"))
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
PARAMETERS = ("a castle in the clouds\nNegative prompt: blurry, dark\nSteps: 17, Sampler: DPM++ 2M, "
              "Schedule type: Karras, CFG scale: 5.5, Seed: 4242, Size: 512x768, Model hash: 0123456789, Model: x")
# A file dropped from the desktop, rebuilt in the page: DataTransfer + a `drop` event at the target.
DROP = """([selector, b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type: "image/png" }));
  const target = document.querySelector(selector);
  target.dispatchEvent(new DragEvent("dragover", { bubbles: true, cancelable: true, dataTransfer: transfer }));
  target.dispatchEvent(new DragEvent("drop", { bubbles: true, cancelable: true, dataTransfer: transfer }));
}"""


def png_b64(parameters: str | None = None, size: int = 64) -> str:
    meta = PngImagePlugin.PngInfo()
    if parameters:
        meta.add_text("parameters", parameters)
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (90, 140, 200)).save(buf, format="PNG", pnginfo=meta)
    return base64.b64encode(buf.getvalue()).decode()


def wait_done(page, count: int) -> list[dict]:
    items: list[dict] = []
    for _ in range(600):  # bounded: 600 looks, 0.2 s apart
        items = page.request.get("/api/v1/generations").json()["items"]
        if len(items) >= count and all(g["status"] not in ("queued", "running") for g in items):
            break
        page.wait_for_timeout(200)
    return items


def no_sideways_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = page.evaluate("""Array.from(document.querySelectorAll('body *'))
        .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
        .slice(0, 5).map((e) => e.tagName + '#' + e.id + '.' + e.className)""")
    assert overflow <= 0, f"scrolls sideways by {overflow} px at 390 px: {wide}"


def test_generate_page_extras(live, chromium) -> None:  # noqa: F811
    app, base = live
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context, page, errors = open_page(chromium, base)
    try:
        r = page.request.post("/api/v1/auth/signup", data=signup_payload("painter@example.com"))
        assert r.status == 201, r.text()
        page.goto("/generate?workflow=txt2img")

        # Size presets follow the checkpoint: the demo model (the default) shows its native size and the note on what
        # it draws; the SD 1.x group for the tiny checkpoint, the SDXL group for the XL one; a click sets both.
        demo = page.locator('.aspect-group[data-family="demo"]')
        sd15 = page.locator('.aspect-group[data-family="sd15"]')
        sdxl = page.locator('.aspect-group[data-family="sdxl"]')
        note = page.locator("#demo-model-note")
        expect(demo).to_be_visible()
        expect(note).to_be_visible()
        expect(sd15).to_be_hidden()
        expect(page.locator("#param-width")).to_have_value("64")
        expect(demo.locator('[data-width="64"][data-height="64"]')).to_have_attribute("aria-pressed", "true")
        page.select_option("#param-checkpoint", "imagen-tiny")
        expect(sd15).to_be_visible()
        expect(demo).to_be_hidden()
        expect(note).to_be_hidden()
        expect(sdxl).to_be_hidden()
        sd15.locator('[data-width="768"][data-height="512"]').click()
        expect(page.locator("#param-width")).to_have_value("768")
        expect(page.locator("#param-height")).to_have_value("512")
        if page.locator('#param-checkpoint option[data-family="sdxl"]').count():
            page.select_option("#param-checkpoint", "imagen-tiny-xl")
            expect(sdxl).to_be_visible()
            expect(sd15).to_be_hidden()
            sdxl.locator('[data-width="832"][data-height="1216"]').click()
            expect(page.locator("#param-width")).to_have_value("832")
            expect(page.locator("#param-height")).to_have_value("1216")
            expect(sdxl.locator('[data-width="832"]')).to_have_attribute("aria-pressed", "true")
            page.select_option("#param-checkpoint", "imagen-tiny")

        # Batch count 2 with a fixed seed: two jobs (both in the queue panel), consecutive seeds; the first run's
        # live preview shows in the progress panel while the worker is held on it.
        _seen, release = hold_first_preview(app, timeout=30.0)
        page.fill("#param-prompt", "a lighthouse")
        for name, value in (("steps", "12"), ("width", "64"), ("height", "64"), ("seed", "100"), ("batch_size", "1")):
            page.fill(f"#param-{name}", value)
        page.fill("#batch-count", "2")
        page.click("#submit")
        try:
            preview = page.locator("#live-preview-img")
            expect(page.locator("#live-preview")).to_be_visible()
            assert preview.get_attribute("src").startswith("data:image/jpeg;base64,")
            assert page.evaluate("document.getElementById('live-preview-img').naturalWidth") > 0
            page.screenshot(path=str(ARTIFACTS / "generate-preview-1280.png"))
            page.click("#queue-refresh")
            expect(page.locator("#queue-list li")).to_have_count(2)
        finally:
            release.set()
        jobs = wait_done(page, 2)
        assert [g["status"] for g in jobs] == ["succeeded", "succeeded"], jobs
        assert sorted(g["outputs"][0]["seed"] for g in jobs) == [100, 101]
        expect(page.locator("#outputs figure")).to_have_count(2)
        expect(page.locator("#live-preview")).to_be_hidden()

        # A PNG with A1111 parameters dropped on the page fills the form (through POST /api/v1/png-info).
        page.evaluate(DROP, ["#result", png_b64(PARAMETERS), "from-a1111.png"])
        expect(page.locator("#param-prompt")).to_have_value("a castle in the clouds")
        expect(page.locator("#param-negative_prompt")).to_have_value("blurry, dark")
        expect(page.locator("#param-steps")).to_have_value("17")
        expect(page.locator("#param-guidance")).to_have_value("5.5")
        expect(page.locator("#param-seed")).to_have_value("4242")
        expect(page.locator("#param-width")).to_have_value("512")
        expect(page.locator("#param-height")).to_have_value("768")
        expect(page.locator("#param-scheduler")).to_have_value("dpmpp_2m_karras")
        expect(page.locator("#drop-status")).to_contain_text("Filled from from-a1111.png")
        # One without parameters is refused with a message, the form kept.
        page.evaluate(DROP, ["#result", png_b64(None), "plain.png"])
        expect(page.locator("#form-error")).to_contain_text("carries no generation parameters")
        expect(page.locator("#param-prompt")).to_have_value("a castle in the clouds")

        # Inpaint: an image dropped on the input field sets it; the painter paints a mask that is submitted.
        page.goto("/generate?workflow=inpaint")
        page.evaluate(DROP, ["#param-init_image", png_b64(None, 64), "photo.png"])
        assert page.evaluate("document.getElementById('param-init_image').files.length") == 1
        canvas = page.locator("#mask-painter-canvas")
        expect(canvas).to_be_visible()
        page.fill("#mask-brush-size", "40")
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.6, steps=8)
        page.mouse.up()
        expect(page.locator("#mask-painter")).to_have_attribute("data-mask-ready", "true")
        mask = page.evaluate("""() => new Promise((resolve) => {
            const file = document.getElementById('param-mask_image').files[0];
            const img = new Image();
            img.onload = () => {
              const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
              const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
              const px = (x, y) => ctx.getImageData(x, y, 1, 1).data[0];
              resolve({w: img.width, h: img.height, corner: px(1, 1), centre: px(32, 29), name: file.name});
            };
            img.src = URL.createObjectURL(file);
        })""")
        assert mask == {"w": 64, "h": 64, "corner": 0, "centre": 255, "name": "painted-mask.png"}, mask
        page.fill("#param-prompt", "a red door")
        for name, value in (("steps", "2"), ("width", "64"), ("height", "64"), ("seed", "7")):
            page.fill(f"#param-{name}", value)
        page.fill("#batch-count", "1")
        page.click("#submit")
        expect(page.locator("#status")).to_have_text("Done.")
        inpaint = [g for g in wait_done(page, 3) if g["workflow"] == "inpaint"]
        assert len(inpaint) == 1 and inpaint[0]["status"] == "succeeded", inpaint
        page.click("#mask-clear")
        expect(page.locator("#mask-painter")).to_have_attribute("data-mask-ready", "false")
        page.screenshot(path=str(ARTIFACTS / "generate-inpaint-1280.png"), full_page=True)

        # 390 px: no sideways scroll, on both workflows; screenshots at both widths.
        page.set_viewport_size({"width": 390, "height": 844})
        for workflow in ("txt2img", "inpaint"):
            page.goto(f"/generate?workflow={workflow}")
            if workflow == "inpaint":
                page.evaluate(DROP, ["#param-init_image", png_b64(None, 64), "photo.png"])
                expect(canvas).to_be_visible()
            no_sideways_scroll(page)
            page.screenshot(path=str(ARTIFACTS / f"generate-{workflow}-390.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto("/generate?workflow=txt2img")
        page.screenshot(path=str(ARTIFACTS / "generate-txt2img-1280.png"), full_page=True)

        # axe-core, light and dark: no serious or critical violation (painter and preview shown).
        axe = AXE.read_text()
        found = []
        for theme in ("light", "dark"):
            page.evaluate(f"localStorage.setItem('imagen_theme', '{theme}')")
            for workflow in ("txt2img", "inpaint"):
                page.goto(f"/generate?workflow={workflow}")
                if workflow == "inpaint":
                    page.evaluate(DROP, ["#param-init_image", png_b64(None, 64), "photo.png"])
                    expect(canvas).to_be_visible()
                else:
                    page.evaluate("""() => { document.getElementById('live-preview').hidden = false;
                        document.getElementById('live-preview-img').src = 'data:image/gif;base64,R0lGODlhAQAB'; }""")
                page.evaluate(axe)
                found += [f"{workflow} [{theme}] {v}" for v in page.evaluate(AXE_RUN)]
        assert not found, "accessibility violations:\n" + "\n".join(found)
        assert not errors, f"errors in the page: {errors}"
    finally:
        context.close()
