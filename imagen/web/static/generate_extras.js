// The generate page's extras: size presets per model family, the inpaint mask painter, and drag-and-drop (an image
// onto an image field sets it; a PNG carrying A1111 `parameters` anywhere else fills the form via /api/v1/png-info).
// The live preview and the batch count live in imagen.js's submit/stream code.
"use strict";

(function () {
  function setValue(field, value) {
    if (!field || value === undefined || value === null) return false;
    if (field.tagName === "SELECT" && !Array.from(field.options).some((o) => o.value === String(value))) return false;
    field.value = String(value);
    // studio.js keeps the form state on input/change
    field.dispatchEvent(new Event("input", { bubbles: true }));
    field.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  // ---- size presets: the group of the selected checkpoint's family ----
  function setupAspectPresets(form) {
    const box = document.getElementById("aspect-presets");
    if (!box) return;
    const checkpoint = form.querySelector('[data-param][data-type="checkpoint"]');
    const width = form.querySelector('[data-param][name="width"]');
    const height = form.querySelector('[data-param][name="height"]');
    const demoNote = document.getElementById("demo-model-note");
    function family() {  // the preset group: the family's, or the demo model's own ("demo")
      const option = checkpoint && checkpoint.selectedOptions[0];
      return (option && (option.dataset.sizes || option.dataset.family)) || "sd15";
    }
    function mark() {
      for (const button of box.querySelectorAll(".aspect-preset")) {
        const on = button.dataset.width === width.value && button.dataset.height === height.value;
        button.setAttribute("aria-pressed", on ? "true" : "false");
      }
    }
    function show() {
      for (const group of box.querySelectorAll(".aspect-group")) group.hidden = group.dataset.family !== family();
      if (demoNote) demoNote.hidden = !checkpoint || checkpoint.value !== demoNote.dataset.checkpoint;
      mark();
    }
    box.addEventListener("click", (event) => {
      const button = event.target.closest(".aspect-preset");
      if (!button) return;
      setValue(width, button.dataset.width);
      setValue(height, button.dataset.height);
      mark();
    });
    if (checkpoint) checkpoint.addEventListener("change", show);
    width.addEventListener("input", mark);
    height.addEventListener("input", mark);
    show();
  }

  // ---- the mask painter (inpaint): white strokes on black, at the input image's own size ----
  function setupMaskPainter(form) {
    const painter = document.getElementById("mask-painter");
    const maskInput = form.querySelector('[data-param][name="mask_image"]');
    const initInput = form.querySelector('[data-param][name="init_image"]');
    if (!painter || !maskInput || !initInput) return;
    const image = document.getElementById("mask-painter-image");
    const canvas = document.getElementById("mask-painter-canvas");
    const size = document.getElementById("mask-brush-size");
    const eraser = document.getElementById("mask-tool-eraser");
    const context = canvas.getContext("2d");
    let url = null;
    let last = null;
    let painted = false;

    function load(file) {
      if (!file) return;
      if (url) URL.revokeObjectURL(url);
      url = URL.createObjectURL(file);
      image.src = url;
    }
    image.addEventListener("load", () => {
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      painted = false;
      painter.hidden = false;
    });
    initInput.addEventListener("change", () => load(initInput.files && initInput.files[0]));
    if (initInput.files && initInput.files[0]) load(initInput.files[0]); // kept by the browser or a reuse

    function point(event) {
      const box = canvas.getBoundingClientRect();
      return { x: (event.clientX - box.left) * (canvas.width / box.width),
               y: (event.clientY - box.top) * (canvas.height / box.height) };
    }
    function stroke(from, to) {
      const scale = canvas.width / canvas.getBoundingClientRect().width;
      context.globalCompositeOperation = eraser.checked ? "destination-out" : "source-over";
      context.strokeStyle = "#ffffff";
      context.fillStyle = "#ffffff";
      context.lineCap = "round";
      context.lineJoin = "round";
      context.lineWidth = Number(size.value) * scale;
      context.beginPath();
      context.moveTo(from.x, from.y);
      context.lineTo(to.x + 0.01, to.y);
      context.stroke();
    }
    // The mask file the form sends: black where nothing was painted, white where it was.
    function exportMask() {
      const out = document.createElement("canvas");
      out.width = canvas.width;
      out.height = canvas.height;
      const ctx = out.getContext("2d");
      ctx.fillStyle = "#000000";
      ctx.fillRect(0, 0, out.width, out.height);
      ctx.drawImage(canvas, 0, 0);
      out.toBlob((blob) => {
        if (!blob) return;
        const transfer = new DataTransfer();
        transfer.items.add(new File([blob], "painted-mask.png", { type: "image/png" }));
        maskInput.files = transfer.files;
        maskInput.dispatchEvent(new Event("change", { bubbles: true }));
        painter.dataset.maskReady = "true";
      }, "image/png");
    }
    canvas.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      last = point(event);
      painter.dataset.maskReady = "false";
      stroke(last, last);
      painted = true;
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const next = point(event);
      stroke(last, next);
      last = next;
    });
    function end() {
      if (!last) return;
      last = null;
      exportMask();
    }
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    document.getElementById("mask-clear").addEventListener("click", () => {
      context.clearRect(0, 0, canvas.width, canvas.height);
      if (painted) { maskInput.value = ""; painted = false; }
      painter.dataset.maskReady = "false";
    });
  }

  // ---- drag and drop ----
  function setupDrops(form) {
    const status = document.getElementById("drop-status");
    const box = document.getElementById("form-error");
    const api = window.imagenApi;

    function setFile(input, file) {
      const transfer = new DataTransfer();
      transfer.items.add(file);
      input.files = transfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }
    async function fillFromPng(file) {
      status.textContent = "Reading the image's generation parameters…";
      box.hidden = true;
      const response = await fetch("/api/v1/png-info", {
        method: "POST", credentials: "same-origin", body: file,
        headers: { "Content-Type": file.type || "application/octet-stream", "X-CSRF-Token": api.csrf(),
                   Accept: "application/json" },
      });
      let data = null;
      try { data = await response.json(); } catch (_) { data = null; }
      if (!response.ok) {
        status.textContent = "";
        api.show(box, { ok: false, status: response.status, data });
        return;
      }
      const filled = [];
      for (const [name, value] of Object.entries(data.fields || {})) {
        const field = form.querySelector(`[data-param][name="${name}"]`);
        if (field && field.dataset.type !== "image" && setValue(field, value)) filled.push(name);
      }
      status.textContent = filled.length
        ? `Filled from ${file.name}: ${filled.join(", ").replaceAll("_", " ")}.`
        : `${file.name} has parameters, but none fit this workflow's form.`;
    }
    function imageFile(event) {
      const files = event.dataTransfer && event.dataTransfer.files;
      return files && files.length && files[0].type.startsWith("image/") ? files[0] : null;
    }

    document.addEventListener("dragover", (event) => {
      if (!event.dataTransfer || !Array.from(event.dataTransfer.types || []).includes("Files")) return;
      event.preventDefault(); // allow the drop (the browser would open the file otherwise)
      const field = event.target.closest && event.target.closest(".field-image");
      for (const f of form.querySelectorAll(".field-image")) f.classList.toggle("drop-target", f === field);
    });
    document.addEventListener("dragleave", (event) => {
      if (event.target === document.documentElement) {
        for (const f of form.querySelectorAll(".field-image")) f.classList.remove("drop-target");
      }
    });
    document.addEventListener("drop", async (event) => {
      for (const f of form.querySelectorAll(".field-image")) f.classList.remove("drop-target");
      const file = imageFile(event);
      if (!file) return;
      event.preventDefault();
      const field = event.target.closest && event.target.closest(".field-image");
      const input = field && field.querySelector('input[type="file"][data-param]');
      if (input) {
        setFile(input, file);
        status.textContent = `${file.name} set as ${input.name.replaceAll("_", " ")}.`;
        return;
      }
      try {
        await fillFromPng(file);
      } catch (err) {
        status.textContent = "";
        api.show(box, { ok: false, status: 0, data: { detail: `Could not read the image: ${err}` } });
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("generate-form");
    if (!form) return;
    setupAspectPresets(form);
    setupMaskPainter(form);
    setupDrops(form);
  });
})();
