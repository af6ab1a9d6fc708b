// Privacy requests and consent pages, self-contained: the public request form and its admin queue, the cookie
// banner, the changed-policy notice, the consent centre and the report-a-minor form. Loaded on every page.

// ==== privacy requests (imagen/privacy/requests): /privacy/request and /admin/privacy-requests ====
(function () {
  const { csrf } = window.imagenApi; // api.js

  async function post(url, body) {
    const headers = { Accept: "application/json", "Content-Type": "application/json" };
    const token = csrf();
    if (token) headers["X-CSRF-Token"] = token;
    const response = await fetch(url, {
      method: "POST", headers, credentials: "same-origin", body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    return { ok: response.ok, status: response.status, data };
  }

  function show(box, detail) {
    box.replaceChildren();
    const messages = Array.isArray(detail)
      ? detail.map((d) => {
        const loc = (d.loc || []).filter((p) => p !== "body" && p !== "query");
        return (loc.length ? `${loc.join(".")}: ` : "") + d.msg;
      })
      : [String(detail || "Something went wrong")];
    for (const text of messages) {
      const p = document.createElement("p");
      p.textContent = text;
      box.append(p);
    }
    box.hidden = false;
  }

  function setupRequestForm() {
    const form = document.getElementById("privacy-request-form");
    const verify = document.getElementById("privacy-verify-form");
    if (!form || !verify) return;
    const done = document.getElementById("privacy-request-done");
    function finish(data) {
      form.hidden = true;
      verify.hidden = true;
      document.getElementById("privacy-request-due").textContent = new Date(data.due_at).toLocaleDateString();
      document.getElementById("privacy-request-id").textContent = data.id;
      done.hidden = false;
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = document.getElementById("form-error");
      box.hidden = true;
      const data = new FormData(form);
      const r = await post("/api/v1/privacy-requests", {
        email: data.get("email"), kind: data.get("kind"), details: data.get("details") || "",
      });
      if (!r.ok) { show(box, r.data && r.data.detail); return; }
      if (r.data.verification === "verified") { finish(r.data); return; }
      verify.dataset.requestId = r.data.id;
      form.hidden = true;
      verify.hidden = false;
      document.getElementById("pr-code").focus();
    });
    verify.addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = document.getElementById("verify-error");
      box.hidden = true;
      const id = encodeURIComponent(verify.dataset.requestId);
      const r = await post(`/api/v1/privacy-requests/${id}/verify`, { code: new FormData(verify).get("code") });
      if (r.ok) finish(r.data); else show(box, r.data && r.data.detail);
    });
    document.getElementById("privacy-resend-code").addEventListener("click", async () => {
      const box = document.getElementById("verify-error");
      const id = encodeURIComponent(verify.dataset.requestId);
      const r = await post(`/api/v1/privacy-requests/${id}/resend-code`);
      const sent = verify.dataset.mailSent === "yes"; // the outbox backend only logs mail: say so
      const note = sent ? "A new code is on its way." : "A new code was made; this server does not send email, so ask the operator for it.";
      if (r.ok) { box.hidden = true; window.alert(note); } else show(box, r.data && r.data.detail);
    });
  }

  function setupAdminQueue() {
    for (const form of document.querySelectorAll("form.privacy-transition")) {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const box = form.querySelector(".error");
        box.hidden = true;
        const data = new FormData(form);
        const body = { status: data.get("status"), note: data.get("note") || null };
        if (data.get("days")) body.days = Number(data.get("days"));
        const id = encodeURIComponent(form.dataset.requestId);
        const r = await post(`/api/v1/admin/privacy-requests/${id}/transition`, body);
        if (r.ok) window.location.reload(); else show(box, r.data && r.data.detail);
      });
      const resend = form.querySelector(".privacy-send-code");
      if (resend) {
        resend.addEventListener("click", async () => {
          const id = encodeURIComponent(form.dataset.requestId);
          const r = await post(`/api/v1/admin/privacy-requests/${id}/send-code`);
          if (r.ok) window.location.reload(); else show(form.querySelector(".error"), r.data && r.data.detail);
        });
      }
    }
    const record = document.getElementById("record-privacy-request");
    if (!record) return;
    record.addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = record.querySelector(".error");
      box.hidden = true;
      const data = new FormData(record);
      const body = {
        email: data.get("email"), kind: data.get("kind"), channel: data.get("channel"),
        details: data.get("details") || "", send_code: data.get("send_code") === "on",
      };
      if (data.get("received_at")) body.received_at = `${data.get("received_at")}T00:00:00Z`;
      const r = await post("/api/v1/admin/privacy-requests", body);
      if (r.ok) window.location.reload(); else show(box, r.data && r.data.detail);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "privacy-request") setupRequestForm();
    if (page === "admin-privacy-requests") setupAdminQueue();
  });
})();
// ==== end of privacy requests ====

// ==== consent and policy (consent owner): cookie banner, changed-policy notice, consent centre, report a minor ====
// Self-contained. Writes go to the JSON API; the server sets the cookie-choice cookie (first-party, HttpOnly).
(function () {
  const { csrf } = window.imagenApi; // api.js

  async function send(method, url, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = csrf();
    if (token && method !== "GET") headers["X-CSRF-Token"] = token;
    const response = await fetch(url, {
      method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
    return { ok: response.ok, status: response.status, data };
  }

  function fail(box, r) {
    const detail = r.data && r.data.detail;
    let message = `Request failed (HTTP ${r.status})`;
    if (Array.isArray(detail)) {
      message = detail.map((d) => {
        const loc = (d.loc || []).filter((p) => p !== "body");
        return loc.length ? `${loc[loc.length - 1].replace(/_/g, " ")}: ${d.msg}` : d.msg;
      }).join("; ");
    } else if (typeof detail === "string") {
      message = detail;
    }
    box.textContent = message;
    box.hidden = false;
  }

  function setupCookieBanner() {
    const banner = document.getElementById("cookie-banner");
    if (!banner) return;
    const box = document.getElementById("cookie-error");
    for (const [id, analytics] of [["cookie-accept", true], ["cookie-decline", false]]) {
      const button = document.getElementById(id);
      button.addEventListener("click", async () => {
        box.hidden = true;
        button.disabled = true;
        const r = await send("POST", "/api/v1/cookie-consent", { analytics });
        button.disabled = false;
        if (!r.ok) { fail(box, r); return; }
        document.body.dataset.analytics = r.data.analytics_allowed ? "on" : "off";
        banner.remove();
      });
    }
  }

  function setupPolicyNotice() {
    const notice = document.getElementById("policy-notice");
    if (!notice) return;
    const button = document.getElementById("accept-policy");
    const box = document.getElementById("policy-notice-error");
    button.addEventListener("click", async () => {
      box.hidden = true;
      button.disabled = true;
      const r = await send("POST", "/api/v1/me/policy-acceptance", { version: notice.dataset.version });
      button.disabled = false;
      if (!r.ok) { fail(box, r); return; }
      notice.remove();
    });
  }

  function setupConsentCentre() {
    const form = document.getElementById("consent-form");
    if (!form) return;
    const box = document.getElementById("form-error");
    const saved = document.getElementById("consent-saved");
    for (const input of form.querySelectorAll("input[type=checkbox]")) {
      input.addEventListener("change", async () => {
        box.hidden = true;
        saved.hidden = true;
        input.disabled = true;
        const r = await send("PUT", "/api/v1/me/consents", { [input.name]: input.checked });
        input.disabled = false;
        if (!r.ok) { input.checked = !input.checked; fail(box, r); return; }
        window.location.reload();
      });
    }
    for (const button of document.querySelectorAll(".withdraw-marketing")) {
      button.addEventListener("click", async () => {
        button.disabled = true;
        const id = encodeURIComponent(button.dataset.outputId);
        const r = await send("DELETE", `/api/v1/outputs/${id}/marketing-consent`);
        if (r.ok || r.status === 404) { window.location.reload(); return; }
        button.disabled = false;
        fail(box, r);
      });
    }
  }

  function setupMinorReport() {
    const form = document.getElementById("minor-report-form");
    if (!form) return;
    const box = document.getElementById("form-error");
    const done = document.getElementById("minor-report-done");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      box.hidden = true;
      const f = form.elements;
      const body = { details: f.details.value.trim() };
      for (const name of ["account_email", "reference", "reporter_email"]) {
        if (f[name].value.trim()) body[name] = f[name].value.trim();
      }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      const r = await send("POST", "/api/v1/minor-reports", body);
      button.disabled = false;
      if (!r.ok) { fail(box, r); return; }
      form.hidden = true;
      done.textContent = r.data.message;
      done.hidden = false;
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupCookieBanner();
    setupPolicyNotice();
    setupConsentCentre();
    setupMinorReport();
  });
})();
// ==== end of consent and policy ====
