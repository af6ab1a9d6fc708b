// Account security pages: reset a password, confirm an email address, and on /account the address and two-factor
// sections. Every write goes through the JSON API (api.js).
"use strict";

(function () {
  const { call, show } = window.imagenApi;
  const byId = (id) => document.getElementById(id);

  // Run a form's submit as one API call; `done` gets the answer when it is ok.
  function onSubmit(form, errorId, send, done) {
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = byId(errorId);
      box.hidden = true;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const r = await send();
        if (r.ok) done(r); else show(box, r);
      } catch (err) {
        show(box, { status: 0, data: { detail: `Could not reach the server: ${err}` } });
      } finally {
        button.disabled = false;
      }
    });
  }

  function resetPage() {
    const request = byId("reset-request-form");
    onSubmit(request, "reset-error",
      () => call("POST", "/api/v1/auth/password-reset", { email: byId("reset-email").value.trim() }),
      (r) => { request.hidden = true; const p = byId("reset-sent"); p.textContent = r.data.detail; p.hidden = false; });
    const confirm = byId("reset-confirm-form");
    onSubmit(confirm, "reset-error",
      () => call("POST", "/api/v1/auth/password-reset/confirm",
        { token: confirm.dataset.token, password: byId("new-password").value }),
      () => { confirm.hidden = true; byId("reset-done").hidden = false; });
  }

  function verifyPage() {
    const form = byId("verify-form");
    onSubmit(form, "verify-error", () => call("POST", "/api/v1/auth/verify-email", { token: form.dataset.token }),
      (r) => { form.hidden = true; const p = byId("verify-done"); p.textContent = r.data.detail; p.hidden = false; });
  }

  async function emailSection() {
    const status = byId("email-status");
    const me = await call("GET", "/api/v1/me");
    if (!me.ok) return;
    const verified = Boolean(me.data.email_verified_at);
    status.textContent = `${me.data.email}: ${verified ? "confirmed" : "not confirmed yet"}` +
      (me.data.email_verification_required ? " (generation and uploads wait until it is)" : "");
    const resend = byId("verify-resend");
    resend.hidden = verified;
    resend.addEventListener("click", async () => {
      const r = await call("POST", "/api/v1/me/verify-email");
      if (r.ok) { const p = byId("email-done"); p.textContent = r.data.detail; p.hidden = false; }
      else show(byId("email-error"), r);
    });
    const form = byId("email-form");
    onSubmit(form, "email-error",
      () => call("POST", "/api/v1/me/email",
        { new_email: byId("new-email").value.trim(), current_password: byId("email-password").value }),
      (r) => { form.reset(); const p = byId("email-done"); p.textContent = r.data.detail; p.hidden = false; });
  }

  async function twoFactorSection() {
    const setup = byId("twofa-setup-form");
    const confirm = byId("twofa-confirm-form");
    const disable = byId("twofa-disable-form");
    async function refresh() {
      const r = await call("GET", "/api/v1/me/2fa");
      if (!r.ok) return;
      byId("twofa-status").textContent = r.data.enabled
        ? `On; ${r.data.recovery_codes_left} recovery codes left.`
        : `Off.${r.data.required ? " Your role needs it: moderation and administration wait until it is on." : ""}`;
      setup.hidden = r.data.enabled || !confirm.hidden;
      disable.hidden = !r.data.enabled;
    }
    onSubmit(setup, "twofa-error",
      () => call("POST", "/api/v1/me/2fa/setup", { password: byId("twofa-password").value }),
      (r) => {
        setup.reset(); setup.hidden = true;
        byId("twofa-secret").textContent = r.data.secret;
        byId("twofa-uri").href = r.data.otpauth_uri;
        confirm.hidden = false;
      });
    onSubmit(confirm, "twofa-error",
      () => call("POST", "/api/v1/me/2fa/confirm", { code: byId("twofa-code").value.trim() }),
      (r) => {
        confirm.reset(); confirm.hidden = true;
        const list = byId("twofa-code-list");
        list.replaceChildren(...r.data.recovery_codes.map((c) => {
          const li = document.createElement("li"); const code = document.createElement("code");
          code.textContent = c; li.append(code); return li;
        }));
        byId("twofa-codes").hidden = false;
        refresh();
      });
    onSubmit(disable, "twofa-error",
      () => call("POST", "/api/v1/me/2fa/disable", { password: byId("twofa-off-password").value }),
      () => { disable.reset(); byId("twofa-codes").hidden = true; refresh(); });
    await refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "reset-password") resetPage();
    if (page === "verify-email") verifyPage();
    if (page === "account") { emailSection(); twoFactorSection(); }
  });
})();
