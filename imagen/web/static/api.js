// The JSON API from the pages: the CSRF header, JSON or multipart bodies, and error messages a person can read.
// Loaded before the other scripts (base.html); they take what they need from window.imagenApi.
"use strict";

(function () {
  function csrf() {
    const found = document.cookie.split(";").map((p) => p.trim()).find((p) => p.startsWith("imagen_csrf="));
    return found ? decodeURIComponent(found.slice("imagen_csrf=".length)) : "";
  }

  // body: undefined, a plain object (sent as JSON) or FormData (multipart; the browser sets the boundary).
  async function call(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf();
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(url, { method, headers, credentials: "same-origin", body: payload });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
    return { ok: response.ok, status: response.status, data };
  }

  // detail: a string, a list of {loc, msg}, or {message, bad_lines} (an import with no valid hash).
  function show(box, r) {
    const detail = r.data && r.data.detail;
    let message = `Request failed (HTTP ${r.status})`;
    if (Array.isArray(detail)) {
      message = detail.map((d) => {
        const loc = (d.loc || []).filter((p) => p !== "body");
        return loc.length ? `${loc.join(".")}: ${d.msg}` : d.msg;
      }).join("; ");
    } else if (typeof detail === "string") {
      message = detail;
    } else if (detail && typeof detail === "object") {
      const lines = (detail.bad_lines || []).map((b) => `line ${b.line}: ${b.reason}`);
      message = [detail.message || JSON.stringify(detail), ...lines].join("\n");
    }
    box.textContent = message;
    box.hidden = false;
  }

  window.imagenApi = { csrf, call, show };
})();
