// IMAGEN pages: every write goes to the JSON API; cookie-authenticated writes carry X-CSRF-Token.
"use strict";

(function () {
  const CSRF_COOKIE = "imagen_csrf";

  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const [key, ...rest] = part.trim().split("=");
      if (key === name) return decodeURIComponent(rest.join("="));
    }
    return "";
  }

  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const csrf = cookie(CSRF_COOKIE);
    if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
    const response = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = { detail: text }; }
    }
    return { ok: response.ok, status: response.status, data };
  }

  // ---- errors ----
  function fieldLabel(form, name) {
    let el = form ? form.elements.namedItem(name) : null;
    if (el instanceof RadioNodeList) el = el[0];
    if (el && el.dataset && el.dataset.label) return el.dataset.label;
    if (el && el.labels && el.labels.length) {
      return el.labels[0].textContent.replace(/\*/g, "").replace(/\s+/g, " ").trim();
    }
    return name.replace(/_/g, " ");
  }

  function clearErrors(form, box) {
    box.hidden = true;
    box.replaceChildren();
    if (form) form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  }

  // detail is a string, or a list of {loc, msg} as FastAPI and the services produce.
  function showErrors(box, form, status, detail) {
    box.replaceChildren();
    const messages = [];
    if (Array.isArray(detail)) {
      for (const item of detail) {
        const loc = (item.loc || []).filter((part) => part !== "body" && part !== "query" && part !== "params");
        const name = loc.length ? String(loc[loc.length - 1]) : "";
        const el = name && form ? form.elements.namedItem(name) : null;
        if (el && el.setAttribute) el.setAttribute("aria-invalid", "true");
        messages.push(name ? `${fieldLabel(form, name)}: ${item.msg}` : item.msg);
      }
    } else if (detail && typeof detail === "object") {
      messages.push(JSON.stringify(detail));
    } else {
      messages.push(detail || `Request failed (HTTP ${status})`);
    }
    if (messages.length === 1) {
      box.textContent = messages[0];
    } else {
      const list = document.createElement("ul");
      for (const message of messages) {
        const li = document.createElement("li");
        li.textContent = message;
        list.append(li);
      }
      box.append(list);
    }
    box.hidden = false;
  }

  function errorBox() {
    return document.getElementById("form-error");
  }

  // ---- header ----
  function setupLogout() {
    const button = document.getElementById("logout");
    if (!button) return;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try { await api("POST", "/api/v1/auth/logout"); } catch (_) { /* leave anyway */ }
      window.location.assign("/login");
    });
  }

  // ---- sign up / log in ----
  function setupSignup() {
    const form = document.getElementById("signup-form");
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = errorBox();
      clearErrors(form, box);
      const f = form.elements;
      const body = {
        email: f.email.value.trim(),
        password: f.password.value,
        date_of_birth: f.date_of_birth.value,
        country: f.country.value,
        consents: {
          model_improvement: f.model_improvement.checked,
          marketing_emails: f.marketing_emails.checked,
        },
      };
      if (f.accept_policy_version.checked) body.accept_policy_version = form.dataset.policyVersion;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const r = await api("POST", "/api/v1/auth/signup", body);
        if (r.status === 201) { window.location.assign("/generate"); return; }
        showErrors(box, form, r.status, r.data && r.data.detail);
      } catch (err) {
        showErrors(box, form, 0, `Could not reach the server: ${err}`);
      } finally {
        button.disabled = false;
      }
    });
  }

  function setupLogin() {
    const form = document.getElementById("login-form");
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = errorBox();
      clearErrors(form, box);
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const body = { email: form.elements.email.value.trim(), password: form.elements.password.value };
        if (form.elements.code && form.elements.code.value.trim()) body.code = form.elements.code.value.trim();
        const r = await api("POST", "/api/v1/auth/login", body);
        if (r.ok) { window.location.assign("/generate"); return; }
        // Two-factor accounts: the password was right; ask for the code and send both again.
        if (r.data && r.data.two_factor_required) document.getElementById("code-field").hidden = false;
        showErrors(box, form, r.status, r.data && r.data.detail);
      } catch (err) {
        showErrors(box, form, 0, `Could not reach the server: ${err}`);
      } finally {
        button.disabled = false;
      }
    });
  }

  // ---- generate ----
  function readAsDataURL(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  async function collectParams(form) {
    const params = {};
    for (const el of form.querySelectorAll("[data-param]")) {
      const type = el.dataset.type;
      if (type === "image") {
        const pick = form.querySelector(`.reference-pick[data-for="${el.name}"]`);
        if (el.files && el.files[0]) params[el.name] = await readAsDataURL(el.files[0]);
        else if (pick && pick.value) params[el.name] = pick.value;
      } else if (type === "loras") {
        params[el.dataset.name] = Array.from(el.querySelectorAll(".lora-rows .lora-row")).map((row) => ({
          id: row.querySelector(".lora-id").value,
          weight: Number(row.querySelector(".lora-weight").value),
        }));
      } else if (type === "integer" || type === "number") {
        if (el.value.trim() !== "") params[el.name] = Number(el.value);
      } else if (type === "boolean") {
        params[el.name] = el.checked;
      } else {
        params[el.name] = el.value;
      }
    }
    return params;
  }

  function setupLoras(form) {
    for (const box of form.querySelectorAll(".loras")) {
      const rows = box.querySelector(".lora-rows");
      const template = box.querySelector("template.lora-row");
      const add = box.querySelector(".add-lora");
      if (!add || !template) continue;
      add.addEventListener("click", () => {
        const row = template.content.firstElementChild.cloneNode(true);
        row.querySelector(".remove-lora").addEventListener("click", () => row.remove());
        rows.append(row);
      });
    }
  }

  function setupPresets(form, box) {
    const picker = document.getElementById("preset");
    if (picker) picker.addEventListener("change", () => picker.form.submit());
    const save = document.getElementById("save-preset");
    if (!save) return;
    save.addEventListener("click", async () => {
      const name = window.prompt("Name for this preset");
      if (!name) return;
      clearErrors(form, box);
      const params = await collectParams(form);
      for (const key of Object.keys(params)) {
        // Presets hold settings, not pictures or the prompt itself.
        if (key === "prompt" || key === "init_image" || key === "mask_image") delete params[key];
      }
      const r = await api("POST", "/api/v1/presets", { name, workflow: form.dataset.workflow, params });
      if (!r.ok) { showErrors(box, form, r.status, r.data && r.data.detail); return; }
      const url = new URL(window.location.href);
      url.searchParams.set("workflow", form.dataset.workflow);
      url.searchParams.set("preset", r.data.id);
      window.location.assign(url.toString());
    });
  }

  // ---- models and reference images ----
  function uploadWithProgress(form, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1/assets");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRF-Token", cookie(CSRF_COOKIE));
      xhr.upload.onprogress = (event) => { if (event.lengthComputable) onProgress(event.loaded / event.total); };
      xhr.onload = () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (_) { data = { detail: xhr.responseText }; }
        resolve({ ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status, data });
      };
      xhr.onerror = () => reject(new Error("network error"));
      const body = new FormData();
      body.append("kind", form.elements.kind.value);
      if (form.elements.public && form.elements.public.checked) body.append("public", "true");
      body.append("file", form.elements.file.files[0]);
      xhr.send(body);
    });
  }

  function setupModels() {
    const form = document.getElementById("upload-form");
    if (form) {
      const box = errorBox();
      const bar = document.getElementById("upload-progress");
      const text = document.getElementById("upload-status");
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        clearErrors(form, box);
        if (!form.elements.file.files.length) { showErrors(box, form, 0, "Choose a file to upload."); return; }
        const button = form.querySelector("button[type=submit]");
        button.disabled = true;
        bar.hidden = false;
        try {
          const r = await uploadWithProgress(form, (p) => {
            bar.value = p;
            text.textContent = p < 1 ? `Uploading… ${Math.round(p * 100)}%` : "Checking the file…";
          });
          if (r.ok) { window.location.reload(); return; }
          text.textContent = "";
          showErrors(box, form, r.status, r.data && r.data.detail);
        } catch (err) {
          showErrors(box, form, 0, `Could not upload: ${err}`);
        } finally {
          button.disabled = false;
        }
      });
    }
    for (const button of document.querySelectorAll(".delete-asset")) {
      button.addEventListener("click", async () => {
        if (!window.confirm("Delete this file? Generations that already used it keep their images.")) return;
        button.disabled = true;
        const r = await api("DELETE", `/api/v1/assets/${encodeURIComponent(button.dataset.assetId)}`);
        if (r.ok || r.status === 404) { window.location.reload(); return; }
        showErrors(errorBox(), null, r.status, r.data && r.data.detail);
        button.disabled = false;
      });
    }
  }

  function setupGenerate() {
    const form = document.getElementById("generate-form");
    if (!form) return;
    const picker = document.getElementById("workflow");
    picker.addEventListener("change", () => picker.form.submit());

    const box = errorBox();
    setupLoras(form);
    setupPresets(form, box);
    const submit = document.getElementById("submit");
    const cancel = document.getElementById("cancel");
    const statusText = document.getElementById("status");
    const bar = document.getElementById("progress");
    const percent = document.getElementById("progress-text");
    const outputs = document.getElementById("outputs");
    const previewBox = document.getElementById("live-preview");
    const previewImg = document.getElementById("live-preview-img");
    const batchCount = document.getElementById("batch-count");
    let current = null; // { id, source }
    let pending = []; // the batch count's later runs, followed one after another
    let runs = 0; // runs in this submit (batch count)

    function showPreview(url) {
      if (!previewBox) return;
      if (url) previewImg.src = url;
      previewBox.hidden = !url;
    }

    function setProgress(value) {
      const p = Math.max(0, Math.min(1, Number(value) || 0));
      bar.value = p;
      percent.textContent = `${Math.round(p * 100)}%`;
    }

    function finish() {
      if (current && current.source) current.source.close();
      current = null;
      showPreview(null);
      if (pending.length) { follow(pending.shift()); return; }
      cancel.hidden = true;
      submit.disabled = false;
    }

    function showOutputs(gen) {
      for (const out of gen.outputs || []) {
        const figure = document.createElement("figure");
        figure.className = "tile";
        const img = document.createElement("img");
        img.src = out.url;
        img.alt = `Generated image, seed ${out.seed}`;
        img.width = out.width;
        img.height = out.height;
        const caption = document.createElement("figcaption");
        const seed = document.createElement("span");
        seed.className = "seed";
        seed.textContent = `seed ${out.seed} · ${out.width}×${out.height}`;
        const link = document.createElement("a");
        link.className = "button secondary download";
        link.href = `${out.url}?download=1`;
        link.setAttribute("download", "");
        link.textContent = "Download";
        caption.append(seed, " ", link);
        figure.append(img, caption);
        outputs.append(figure);
      }
    }

    function follow(id) {
      const source = new EventSource(`/api/v1/generations/${encodeURIComponent(id)}/events`);
      current = { id, source };
      const run = runs > 1 ? ` (run ${runs - pending.length} of ${runs})` : "";
      setProgress(0);
      source.addEventListener("progress", (event) => {
        const data = JSON.parse(event.data);
        setProgress(data.progress);
        statusText.textContent = (data.status === "queued" ? "Queued…" : `Status: ${data.status}`) + run;
        if (data.preview && data.status === "running") showPreview(data.preview); // transient, a few KB
      });
      source.addEventListener("done", (event) => {
        const gen = JSON.parse(event.data);
        if (gen.status === "succeeded") {
          setProgress(1);
          statusText.textContent = "Done.";
          showOutputs(gen);
        } else if (gen.status === "failed") {
          statusText.textContent = `Failed: ${gen.error || "unknown error"}`;
        } else if (gen.status === "canceled") {
          statusText.textContent = "Canceled.";
        } else {
          statusText.textContent = `Generation ${gen.status}.`;
        }
        finish();
      });
      source.onerror = () => {
        // The stream closes after "done"; an error before that means the connection was lost.
        if (current && current.source === source && source.readyState === EventSource.CLOSED) {
          statusText.textContent = "Lost the connection to the server; see the gallery for the result.";
          finish();
        }
      };
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form, box);
      submit.disabled = true;
      try {
        const params = await collectParams(form);
        for (const el of form.querySelectorAll("[data-param][data-required]")) {
          if (!(el.name in params)) {
            showErrors(box, form, 0, `${fieldLabel(form, el.name)}: choose an image`);
            submit.disabled = false;
            return;
          }
        }
        // Batch count: N runs with consecutive seeds (each run's batch takes `batch_size` of them), or random ones.
        const count = batchCount ? Math.max(1, Math.min(10, Math.floor(Number(batchCount.value) || 1))) : 1;
        const perRun = Number(params.batch_size) || 1;
        const ids = [];
        for (let i = 0; i < count; i += 1) {
          const runParams = { ...params };
          if (typeof params.seed === "number" && params.seed >= 0) runParams.seed = params.seed + i * perRun;
          const r = await api("POST", "/api/v1/generations", { workflow: form.dataset.workflow, params: runParams });
          if (!r.ok) {
            showErrors(box, form, r.status, r.data && r.data.detail);
            if (!ids.length) { submit.disabled = false; return; }
            break; // the runs already queued go ahead
          }
          ids.push(r.data.id);
        }
        outputs.replaceChildren();
        setProgress(0);
        statusText.textContent = "Queued…";
        cancel.hidden = false;
        cancel.disabled = false;
        runs = ids.length;
        pending = ids.slice(1);
        follow(ids[0]);
      } catch (err) {
        showErrors(box, form, 0, `Could not submit: ${err}`);
        submit.disabled = false;
      }
    });

    cancel.addEventListener("click", async () => {
      if (!current) return;
      cancel.disabled = true;
      const later = pending;
      pending = []; // Cancel stops the whole batch count
      try {
        for (const id of later) await api("POST", `/api/v1/generations/${encodeURIComponent(id)}/cancel`);
        const r = await api("POST", `/api/v1/generations/${encodeURIComponent(current.id)}/cancel`);
        if (!r.ok && r.status !== 409) showErrors(box, form, r.status, r.data && r.data.detail);
      } catch (err) {
        showErrors(box, form, 0, `Could not cancel: ${err}`);
        cancel.disabled = false;
      }
      // The event stream reports the final state ("canceled", or "succeeded" if it finished first).
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupLogout();
    setupSignup();
    setupLogin();
    setupGenerate();
    setupModels();
  });
})();

// ==== privacy centre and admin records (retention/records owner) ====
// Pages: /privacy/centre (export, erasure), /admin/breaches, /admin/legal-requests. Self-contained.
(function () {
  const { call, show } = window.imagenApi; // api.js

  function utc(value) { return value ? `${value}:00Z` : null; } // datetime-local inputs hold UTC times
  function lines(value) { return value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean); }

  // ---- privacy centre ----
  function setupCentre() {
    const start = document.getElementById("start-export");
    if (start) {
      const statusText = document.getElementById("export-status");
      const link = document.getElementById("export-download");
      const box = document.getElementById("export-error");
      const poll = async (id) => {
        const r = await call("GET", `/api/v1/me/exports/${encodeURIComponent(id)}`);
        if (!r.ok) { show(box, r); start.disabled = false; return; }
        if (r.data.status === "ready" && r.data.download_url) {
          statusText.textContent = "Your export is ready.";
          link.href = r.data.download_url;
          link.hidden = false;
          start.disabled = false;
        } else if (r.data.status === "pending") {
          statusText.textContent = "Preparing your export…";
          window.setTimeout(() => poll(id), 2000);
        } else {
          statusText.textContent = `Export ${r.data.status}.`;
          start.disabled = false;
        }
      };
      start.addEventListener("click", async () => {
        box.hidden = true;
        start.disabled = true;
        link.hidden = true;
        const r = await call("POST", "/api/v1/me/exports");
        if (!r.ok) { show(box, r); start.disabled = false; return; }
        poll(r.data.id);
      });
    }
    const erase = document.getElementById("erase-form");
    if (erase) {
      const box = document.getElementById("erase-error");
      erase.addEventListener("submit", async (event) => {
        event.preventDefault();
        box.hidden = true;
        if (!window.confirm("Delete your account and everything in it? This cannot be undone.")) return;
        const button = erase.querySelector("button[type=submit]");
        button.disabled = true;
        const r = await call("DELETE", "/api/v1/me", { password: erase.elements.password.value });
        button.disabled = false;
        if (!r.ok) { show(box, r); return; }
        if (r.data.status !== "scheduled") { window.location.assign("/"); return; }
        // A grace period: the account goes on due_at unless the user changes their mind.
        erase.hidden = true;
        document.getElementById("erase-status").textContent =
          `Your account will be erased on ${new Date(r.data.due_at).toLocaleString()}.`;
        const keep = document.getElementById("cancel-erasure");
        keep.hidden = !r.data.can_cancel;
        keep.addEventListener("click", async () => {
          const c = await call("POST", "/api/v1/me/erasure/cancel");
          if (c.ok) { window.location.reload(); return; }
          erase.hidden = false;
          show(box, c);
        }, { once: true });
      });
    }
  }

  // ---- admin: breach register ----
  function affectedFrom(form) {
    const f = form.elements;
    const mode = f.affected_mode.value;
    const affected = {};
    if (mode === "ids") affected.user_ids = lines(f.user_ids.value);
    if (mode === "all") affected.all_users = true;
    if (mode === "categories") {
      affected.categories = Array.from(form.querySelectorAll("input[name=categories]:checked")).map((c) => c.value);
    }
    if (mode !== "ids") {
      if (f.active_from.value) affected.active_from = utc(f.active_from.value);
      if (f.active_to.value) affected.active_to = utc(f.active_to.value);
    }
    return affected;
  }

  function setupBreaches() {
    const form = document.getElementById("breach-form");
    if (!form) return;
    const box = document.getElementById("form-error");
    document.getElementById("lookup-affected").addEventListener("click", async () => {
      box.hidden = true;
      const r = await call("POST", "/api/v1/admin/breaches/lookup", affectedFrom(form));
      if (!r.ok) { show(box, r); return; }
      document.getElementById("lookup-result").textContent = `${r.data.count} account(s) affected`;
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      box.hidden = true;
      const f = form.elements;
      const body = {
        detected_at: utc(f.detected_at.value), severity: f.severity.value, description: f.description.value,
        consequences: f.consequences.value, measures: f.measures.value,
        categories: Array.from(form.querySelectorAll("input[name=categories]:checked")).map((c) => c.value),
        affected: affectedFrom(form),
      };
      const r = await call("POST", "/api/v1/admin/breaches", body);
      if (r.ok) { window.location.reload(); return; }
      show(box, r);
    });
    for (const button of document.querySelectorAll(".regulator-notified")) {
      button.addEventListener("click", async () => {
        const reference = window.prompt("Regulator's reference (optional)") || "";
        const r = await call("PATCH", `/api/v1/admin/breaches/${encodeURIComponent(button.dataset.breachId)}`,
          { regulator_notified_at: new Date().toISOString(), regulator_reference: reference });
        if (r.ok) { window.location.reload(); return; }
        show(box, r);
      });
    }
    for (const button of document.querySelectorAll(".notify-users")) {
      button.addEventListener("click", async () => {
        if (!window.confirm("Send an in-app notice to every affected user not told yet?")) return;
        button.disabled = true;
        const id = encodeURIComponent(button.dataset.breachId);
        const r = await call("POST", `/api/v1/admin/breaches/${id}/notify-users`, {});
        if (r.ok) { window.location.reload(); return; }
        show(box, r);
        button.disabled = false;
      });
    }
  }

  // ---- admin: legal requests ----
  function setupLegalRequests() {
    const form = document.getElementById("legal-request-form");
    if (!form) return;
    const box = document.getElementById("form-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      box.hidden = true;
      const f = form.elements;
      const body = {
        received_at: utc(f.received_at.value), authority: f.authority.value, instrument: f.instrument.value,
        reference: f.reference.value, scope: f.scope.value, user_ids: lines(f.user_ids.value),
        decision: f.decision.value, decision_reason: f.decision_reason.value, disclosed: f.disclosed.value,
      };
      if (body.decision !== "pending") body.responded_at = new Date().toISOString();
      const r = await call("POST", "/api/v1/admin/legal-requests", body);
      if (r.ok) { window.location.reload(); return; }
      show(box, r);
    });
    for (const decide of document.querySelectorAll(".decide-form")) {
      decide.addEventListener("submit", async (event) => {
        event.preventDefault();
        box.hidden = true;
        const r = await call("PATCH", `/api/v1/admin/legal-requests/${encodeURIComponent(decide.dataset.requestId)}`, {
          decision: decide.elements.decision.value, decision_reason: decide.elements.decision_reason.value,
          responded_at: new Date().toISOString(),
        });
        if (r.ok) { window.location.reload(); return; }
        show(box, r);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupCentre();
    setupBreaches();
    setupLegalRequests();
  });
})();
// ==== end of privacy centre and admin records ====
