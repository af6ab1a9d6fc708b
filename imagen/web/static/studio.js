// The studio: the gallery (keyset pages, favourites, selection, ZIP, delete one image), the image detail view and
// its actions. Writes go to the JSON API through api.js (CSRF header); nothing inline, nothing third-party.
"use strict";

(function () {
  const { call, show } = window.imagenApi; // api.js
  // The generate page reads this once (imagen.js): settings to fill in, and an image for img2img/inpaint.
  const REUSE_KEY = "imagen_reuse";

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    node.append(...children);
    return node;
  }

  function tile(item) {
    const li = el("li", { className: "tile" });
    li.dataset.outputId = item.id;
    li.dataset.generationId = item.generation_id;
    const open = el("button", { type: "button", className: "open-detail" });
    open.dataset.outputId = item.id;
    open.setAttribute("aria-label", `Open image, seed ${item.seed}`);
    const img = el("img", { src: item.thumb_url, alt: `${item.prompt.slice(0, 120) || "Generated image"} (seed ${item.seed})`,
      width: item.width, height: item.height, loading: "lazy" });
    open.append(img);
    const check = el("input", { type: "checkbox", className: "select-output", value: item.id });
    const fav = el("button", { type: "button", className: "link-button favorite" },
      item.favorite ? "★ Favourite" : "☆ Favourite");
    fav.dataset.outputId = item.id;
    fav.setAttribute("aria-pressed", String(item.favorite));
    const when = el("time", { dateTime: item.created_at }, `${item.created_at.slice(0, 16).replace("T", " ")} UTC`);
    const download = el("a", { className: "button secondary", href: `${item.url}?download=1` }, "Download");
    download.setAttribute("download", "");
    const del = el("button", { type: "button", className: "danger delete-output" }, "Delete");
    del.dataset.outputId = item.id;
    // Tiles added after the page loaded: their Report is handled here (moderation.js binds the first page's).
    const report = el("button", { type: "button", className: "secondary report-tile" }, "Report");
    report.dataset.outputId = item.id;
    li.append(open,
      el("div", { className: "meta" }, el("label", { className: "check" }, check, el("span", {}, "Select")), fav),
      el("div", { className: "meta" }, el("span", {}, `${item.width}×${item.height} · seed ${item.seed}`), when),
      el("div", { className: "actions" }, download, " ", del, " ", report));
    return li;
  }

  function setupGallery() {
    const grid = document.getElementById("gallery");
    const box = document.getElementById("form-error");
    if (!grid) return;
    const more = document.getElementById("load-more");
    const bulk = document.getElementById("bulk");
    const count = document.getElementById("bulk-count");
    const zip = document.getElementById("bulk-download");

    function selected() {
      return Array.from(grid.querySelectorAll(".select-output:checked")).map((c) => c.value);
    }
    function updateBulk() {
      const ids = selected();
      bulk.hidden = ids.length === 0;
      count.textContent = `${ids.length} selected`;
      zip.href = `/api/v1/outputs/archive?ids=${ids.join(",")}`;
    }
    function removeTiles(ids) {
      for (const id of ids) {
        const li = grid.querySelector(`li[data-output-id="${CSS.escape(id)}"]`);
        if (li) li.remove();
      }
      updateBulk();
      if (!grid.querySelector("li") && (!more || more.hidden)) window.location.reload();
    }
    async function deleteOutputs(ids) {
      box.hidden = true;
      const r = ids.length === 1
        ? await call("DELETE", `/api/v1/outputs/${encodeURIComponent(ids[0])}`)
        : await call("POST", "/api/v1/outputs/delete", { ids });
      if (r.ok || r.status === 404) { removeTiles(ids); return true; }
      show(box, r);
      return false;
    }

    grid.addEventListener("change", (event) => {
      if (event.target.classList.contains("select-output")) updateBulk();
    });
    grid.addEventListener("click", async (event) => {
      const button = event.target.closest("button");
      if (!button) return;
      if (button.classList.contains("delete-output")) {
        if (!window.confirm("Delete this image? The other images of its batch stay. This cannot be undone.")) return;
        button.disabled = true;
        if (!await deleteOutputs([button.dataset.outputId])) button.disabled = false;
      } else if (button.classList.contains("favorite")) {
        const favorite = button.getAttribute("aria-pressed") !== "true";
        const r = await call("PUT", `/api/v1/outputs/${encodeURIComponent(button.dataset.outputId)}/favorite`,
          { favorite });
        if (!r.ok) { show(box, r); return; }
        button.setAttribute("aria-pressed", String(r.data.favorite));
        button.textContent = r.data.favorite ? "★ Favourite" : "☆ Favourite";
      } else if (button.classList.contains("report-tile")) {
        const reason = window.prompt("Why are you reporting this image? (optional)", "");
        if (reason === null) return;
        button.disabled = true;
        const r = await call("POST", "/api/v1/reports", { output_id: button.dataset.outputId, reason });
        if (r.ok) { button.textContent = "Reported"; return; }
        show(box, r);
        button.disabled = false;
      } else if (button.classList.contains("open-detail")) {
        detail.open(button.dataset.outputId);
      }
    });
    document.getElementById("bulk-delete").addEventListener("click", async () => {
      const ids = selected();
      if (!ids.length || !window.confirm(`Delete ${ids.length} images? This cannot be undone.`)) return;
      await deleteOutputs(ids);
    });
    if (more) {
      more.addEventListener("click", async () => {
        more.disabled = true;
        const params = new URLSearchParams(window.location.search);
        params.set("cursor", grid.dataset.nextCursor);
        const r = await call("GET", `/api/v1/outputs?${params}`);
        more.disabled = false;
        if (!r.ok) { show(box, r); return; }
        for (const item of r.data.items) grid.append(tile(item));
        grid.dataset.nextCursor = r.data.next_cursor || "";
        more.hidden = !r.data.next_cursor;
      });
    }
    const detail = setupDetail(grid, deleteOutputs);
  }

  // ---- the detail view: a <dialog> (Esc closes it), arrows move between the gallery's tiles ----
  function setupDetail(grid, deleteOutputs) {
    const dialog = document.getElementById("lightbox");
    const img = document.getElementById("detail-img");
    const params = document.getElementById("detail-params");
    const title = document.getElementById("detail-title");
    const box = document.getElementById("detail-error");
    const report = document.getElementById("detail-report");
    let current = null; // { id, gen }

    function ids() {
      return Array.from(grid.querySelectorAll("li[data-output-id]")).map((li) => li.dataset.outputId);
    }
    function row(name, value) {
      if (value === undefined || value === null || value === "") return;
      params.append(el("dt", {}, name), el("dd", {}, String(value)));
    }
    async function open(id) {
      box.hidden = true;
      document.getElementById("detail-hires-status").hidden = true;
      const li = grid.querySelector(`li[data-output-id="${CSS.escape(id)}"]`);
      const r = await call("GET", `/api/v1/generations/${encodeURIComponent(li.dataset.generationId)}`);
      if (!r.ok) { show(box, r); if (!dialog.open) dialog.showModal(); return; }
      const gen = r.data;
      const out = gen.outputs.find((o) => o.id === id) || gen.outputs[0];
      current = { id, gen, out };
      img.src = out.url;
      img.alt = `${gen.params.prompt || "Generated image"} (seed ${out.seed})`;
      img.width = out.width;
      img.height = out.height;
      title.textContent = `${gen.workflow} · seed ${out.seed}`;
      params.replaceChildren();
      row("Prompt", gen.params.prompt);
      row("Negative prompt", gen.params.negative_prompt);
      row("Seed", out.seed);
      row("Size", `${out.width}×${out.height}`);
      for (const [key, value] of Object.entries(gen.params)) {
        if (["prompt", "negative_prompt", "seed", "width", "height", "loras"].includes(key)) continue;
        row(key.replace(/_/g, " "), typeof value === "object" ? JSON.stringify(value) : value);
      }
      for (const m of gen.models) {
        row(`Model (${m.role})`, `${m.id}${m.weight !== undefined ? ` × ${m.weight}` : ""} · sha256 ${m.sha256}`);
      }
      row("Workflow", `${gen.workflow} v${gen.workflow_version}`);
      row("Created", gen.created_at);
      if (gen.started_at && gen.finished_at) {
        row("Run time", `${((Date.parse(gen.finished_at) - Date.parse(gen.started_at)) / 1000).toFixed(2)} s`);
      }
      for (const [key, value] of Object.entries(gen.signals || {})) {
        if (typeof value === "number") row(key.replace(/_/g, " "), Number.isInteger(value) ? value : value.toFixed(3));
      }
      document.getElementById("detail-download").href = `${out.url}?download=1`;
      report.dataset.outputId = out.id;
      report.textContent = "Report";
      report.disabled = false;
      const list = ids();
      document.getElementById("detail-prev").disabled = list.indexOf(id) <= 0;
      document.getElementById("detail-next").disabled = list.indexOf(id) >= list.length - 1;
      if (!dialog.open) dialog.showModal();
    }
    function step(by) {
      if (!current) return;
      const list = ids();
      const next = list[list.indexOf(current.id) + by];
      if (next) open(next);
    }
    async function reuse(changes, image) {
      const gen = current.gen;
      const settings = { ...gen.params, ...changes };
      delete settings.init_image;
      delete settings.mask_image;
      const stored = { workflow: changes.workflow || gen.workflow, params: settings };
      delete stored.params.workflow;
      if (image) {
        const blob = await (await fetch(current.out.url, { credentials: "same-origin" })).blob();
        stored.image = await new Promise((resolve, reject) => {
          const reader = new FileReader();
          reader.onload = () => resolve(reader.result);
          reader.onerror = () => reject(reader.error);
          reader.readAsDataURL(blob);
        });
      }
      sessionStorage.setItem(REUSE_KEY, JSON.stringify(stored));
      window.location.assign(`/generate?workflow=${encodeURIComponent(stored.workflow)}`);
    }

    document.getElementById("detail-prev").addEventListener("click", () => step(-1));
    document.getElementById("detail-next").addEventListener("click", () => step(1));
    document.getElementById("detail-close").addEventListener("click", () => dialog.close());
    dialog.addEventListener("keydown", (event) => {
      if (event.target.closest("input, textarea, select")) return;
      if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
      if (event.key === "ArrowRight") { event.preventDefault(); step(1); }
    });
    document.getElementById("detail-reuse").addEventListener("click", () => reuse({ seed: current.out.seed }));
    document.getElementById("detail-reuse-seed").addEventListener("click", () => {
      sessionStorage.setItem(REUSE_KEY, JSON.stringify({ workflow: current.gen.workflow,
        params: { seed: current.out.seed }, only: true }));
      window.location.assign(`/generate?workflow=${encodeURIComponent(current.gen.workflow)}`);
    });
    document.getElementById("detail-variations").addEventListener("click", () => reuse({ seed: -1 }));
    document.getElementById("detail-img2img").addEventListener("click", () => reuse({ workflow: "img2img" }, true));
    document.getElementById("detail-inpaint").addEventListener("click", () => reuse({ workflow: "inpaint" }, true));
    // Hires fix: the same settings and seed run again through the hires_fix workflow (only the parameters it has).
    const hiresStatus = document.getElementById("detail-hires-status");
    document.getElementById("detail-hires").addEventListener("click", async () => {
      box.hidden = true;
      hiresStatus.hidden = true;
      const workflow = await call("GET", "/api/v1/workflows/hires_fix");
      if (!workflow.ok) { show(box, workflow); return; }
      const names = new Set(workflow.data.parameters.map((p) => p.name));
      const params = { seed: current.out.seed, batch_size: 1 };
      for (const [key, value] of Object.entries(current.gen.params)) {
        if (names.has(key) && !(key in params)) params[key] = value;
      }
      const r = await call("POST", "/api/v1/generations", { workflow: "hires_fix", params });
      if (!r.ok) { show(box, r); return; }
      hiresStatus.replaceChildren("Hires fix queued. It appears in the gallery when it is done (",
        el("a", { href: "/generate?workflow=hires_fix" }, "see the queue"), ").");
      hiresStatus.dataset.generationId = r.data.id;
      hiresStatus.hidden = false;
    });
    document.getElementById("detail-delete").addEventListener("click", async () => {
      if (!window.confirm("Delete this image? The other images of its batch stay. This cannot be undone.")) return;
      const list = ids();
      const following = list[list.indexOf(current.id) + 1] || list[list.indexOf(current.id) - 1];
      if (!await deleteOutputs([current.id])) return;
      if (following) open(following); else dialog.close();
    });
    return { open };
  }

  // ---- the generate page: saved form state, reuse from the gallery, shortcuts, the queue ----
  const FORM_PREFIX = "imagen_form:"; // + the user's id: the last values, by field name, across workflows

  function formFields(form) {
    return Array.from(form.querySelectorAll("[data-param]")).filter((f) => f.name && f.dataset.type !== "image");
  }
  function fill(form, values) {
    for (const field of formFields(form)) {
      if (!(field.name in values) || values[field.name] === null || typeof values[field.name] === "object") continue;
      if (field.type === "checkbox") field.checked = Boolean(values[field.name]);
      else if (field.tagName === "SELECT") {
        if (Array.from(field.options).some((o) => o.value === String(values[field.name]))) {
          field.value = String(values[field.name]);
        }
      } else field.value = String(values[field.name]);
    }
  }
  function dataUrlToFile(url) {
    const [head, body] = url.split(",", 2);
    const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    return new File([bytes], "from-gallery.png", { type: head.slice(5).split(";")[0] || "image/png" });
  }

  function setupGenerate() {
    const form = document.getElementById("generate-form");
    if (!form) return;
    const user = document.body.dataset.user || "";
    const stateKey = FORM_PREFIX + user;
    const reuse = sessionStorage.getItem(REUSE_KEY);
    sessionStorage.removeItem(REUSE_KEY);
    const saved = JSON.parse(localStorage.getItem(stateKey) || "{}");
    if (!new URLSearchParams(window.location.search).get("preset")) fill(form, saved);
    if (reuse) {
      const data = JSON.parse(reuse);
      if (data.workflow === form.dataset.workflow) {
        fill(form, data.params || {});
        const input = form.querySelector('[data-param][data-type="image"]');
        if (data.image && input) {
          const transfer = new DataTransfer();
          transfer.items.add(dataUrlToFile(data.image));
          input.files = transfer.files;
        }
        save();
      }
    }
    function save() {
      const values = { ...JSON.parse(localStorage.getItem(stateKey) || "{}") };
      for (const field of formFields(form)) values[field.name] = field.type === "checkbox" ? field.checked : field.value;
      localStorage.setItem(stateKey, JSON.stringify(values));
    }
    form.addEventListener("input", save);
    form.addEventListener("change", save);

    // Ctrl+Enter (or Cmd+Enter) generates from anywhere on the page; Esc cancels the running job.
    document.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit(document.getElementById("submit"));
      } else if (event.key === "Escape") {
        const cancel = document.getElementById("cancel");
        if (cancel && !cancel.hidden && !cancel.disabled) cancel.click();
      }
    });
    // The result panel comes into view when a job starts (it is sticky beside the form on wide screens).
    form.addEventListener("submit", () => {
      const panel = document.getElementById("result");
      const box = panel.getBoundingClientRect();
      if (box.top < 0 || box.top > window.innerHeight - 80) panel.scrollIntoView({ block: "start" });
    });
    setupQueue();
  }

  function setupQueue() {
    const list = document.getElementById("queue-list");
    if (!list) return;
    const empty = document.getElementById("queue-empty");
    async function refresh() {
      const r = await call("GET", "/api/v1/queue");
      if (!r.ok) return;
      list.replaceChildren();
      for (const job of r.data.items) {
        const cancel = el("button", { type: "button", className: "secondary queue-cancel" }, "Cancel");
        cancel.dataset.generationId = job.id;
        const where = job.status === "running" ? `running, ${Math.round(job.progress * 100)}%`
          : `queued, ${job.ahead} ahead`;
        const item = el("li", {}, el("span", {}, `${job.prompt.slice(0, 60) || job.workflow} · ${where} `), cancel);
        item.dataset.generationId = job.id;
        list.append(item);
      }
      empty.hidden = r.data.items.length > 0;
    }
    list.addEventListener("click", async (event) => {
      const button = event.target.closest("button.queue-cancel");
      if (!button) return;
      button.disabled = true;
      await call("POST", `/api/v1/generations/${encodeURIComponent(button.dataset.generationId)}/cancel`);
      await refresh();
    });
    document.getElementById("queue-refresh").addEventListener("click", refresh);
    document.getElementById("generate-form").addEventListener("submit", () => window.setTimeout(refresh, 500));
    refresh();
    window.setInterval(() => { if (!document.hidden) refresh(); }, 5000);
  }

  function setupLogoutClears() {
    const button = document.getElementById("logout");
    if (!button) return;
    button.addEventListener("click", () => {
      for (const key of Object.keys(localStorage)) if (key.startsWith(FORM_PREFIX)) localStorage.removeItem(key);
      sessionStorage.removeItem(REUSE_KEY);
    });
  }

  // ---- the account page: API keys (shown once, revoke, last used) and the notifications inbox ----
  function when(value) { return value ? `${value.slice(0, 16).replace("T", " ")} UTC` : "never"; }

  function setupAccount() {
    const form = document.getElementById("key-form");
    if (!form) return;
    const body = document.querySelector("#key-table tbody");
    const keyBox = document.getElementById("key-error");
    async function keys() {
      const r = await call("GET", "/api/v1/api-keys");
      if (!r.ok) { show(keyBox, r); return; }
      body.replaceChildren();
      for (const key of r.data) {
        const revoke = el("button", { type: "button", className: "danger revoke-key" }, "Revoke");
        revoke.dataset.keyId = key.id;
        revoke.setAttribute("aria-label", `Revoke ${key.name}`);
        const tr = el("tr", {}, el("td", {}, key.name), el("td", {}, el("code", {}, key.prefix)),
          el("td", {}, when(key.created_at)), el("td", { className: "last-used" }, when(key.last_used_at)),
          el("td", {}, revoke));
        tr.dataset.keyId = key.id;
        body.append(tr);
      }
      document.getElementById("key-empty").hidden = r.data.length > 0;
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      keyBox.hidden = true;
      const r = await call("POST", "/api/v1/api-keys", { name: form.elements.name.value });
      if (!r.ok) { show(keyBox, r); return; }
      document.getElementById("key-value").textContent = r.data.key;
      document.getElementById("key-created").hidden = false;
      form.reset();
      await keys();
    });
    body.addEventListener("click", async (event) => {
      const button = event.target.closest("button.revoke-key");
      if (!button || !window.confirm("Revoke this key? Clients using it stop working at once.")) return;
      const r = await call("DELETE", `/api/v1/api-keys/${encodeURIComponent(button.dataset.keyId)}`);
      if (!r.ok && r.status !== 404) { show(keyBox, r); return; }
      document.getElementById("key-created").hidden = true;
      await keys();
    });

    const list = document.getElementById("notes-list");
    const noteBox = document.getElementById("notes-error");
    async function notes() {
      const r = await call("GET", "/api/v1/me/notifications");
      if (!r.ok) { show(noteBox, r); return; }
      list.replaceChildren();
      for (const note of r.data) {
        const item = el("li", { className: note.read_at ? "read" : "unread" },
          el("span", {}, `${note.title} (${when(note.created_at)}): ${note.body} `));
        if (note.link && note.link.startsWith("/")) item.append(el("a", { href: note.link }, "Open"), " ");
        if (!note.read_at) {
          const read = el("button", { type: "button", className: "link-button mark-read" }, "Mark as read");
          read.dataset.noteId = note.id;
          item.append(read);
        }
        list.append(item);
      }
      document.getElementById("notes-empty").hidden = r.data.length > 0;
    }
    list.addEventListener("click", async (event) => {
      const button = event.target.closest("button.mark-read");
      if (!button) return;
      const r = await call("POST", `/api/v1/me/notifications/${encodeURIComponent(button.dataset.noteId)}/read`);
      if (!r.ok) { show(noteBox, r); return; }
      await notes();
    });
    document.getElementById("notes-read-all").addEventListener("click", async () => {
      const r = await call("POST", "/api/v1/me/notifications/read-all");
      if (!r.ok) { show(noteBox, r); return; }
      await notes();
    });
    keys();
    notes();
    setupSecurity();
  }

  function setupSecurity() {
    const form = document.getElementById("password-form");
    const list = document.getElementById("sessions-list");
    const sessionBox = document.getElementById("sessions-error");
    async function sessions() {
      const r = await call("GET", "/api/v1/me/sessions");
      if (!r.ok) { show(sessionBox, r); return; }
      list.replaceChildren();
      for (const s of r.data) {
        const item = el("li", {}, `${s.user_agent || "Unknown browser"} · ${s.ip_address || "?"} · since ${when(s.created_at)} `);
        item.dataset.sessionId = s.id;
        if (s.current) item.append(el("strong", {}, "(this browser)"));
        else {
          const revoke = el("button", { type: "button", className: "secondary revoke-session" }, "Sign out");
          revoke.dataset.sessionId = s.id;
          item.append(revoke);
        }
        list.append(item);
      }
    }
    list.addEventListener("click", async (event) => {
      const button = event.target.closest("button.revoke-session");
      if (!button) return;
      const r = await call("DELETE", `/api/v1/me/sessions/${encodeURIComponent(button.dataset.sessionId)}`);
      if (!r.ok && r.status !== 404) { show(sessionBox, r); return; }
      await sessions();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = document.getElementById("password-error");
      box.hidden = true;
      document.getElementById("password-done").hidden = true;
      const r = await call("POST", "/api/v1/me/password", {
        current_password: form.elements.current_password.value, new_password: form.elements.new_password.value });
      if (!r.ok) { show(box, r); return; }
      form.reset();
      document.getElementById("password-done").hidden = false;
      await sessions();
    });
    sessions();

    const embed = document.getElementById("embed-metadata");
    const settingsBox = document.getElementById("settings-error");
    call("GET", "/api/v1/me/settings").then((r) => { if (r.ok) embed.checked = r.data.embed_metadata; });
    embed.addEventListener("change", async () => {
      settingsBox.hidden = true;
      const r = await call("PUT", "/api/v1/me/settings", { embed_metadata: embed.checked });
      if (!r.ok) { show(settingsBox, r); embed.checked = !embed.checked; }
    });
  }

  // ---- /admin/minor-reports: confirm (starts the account's erasure) or dismiss with a reason ----
  function setupMinorReports() {
    const table = document.getElementById("minor-reports");
    if (!table) return;
    const box = document.getElementById("form-error");
    table.addEventListener("click", async (event) => {
      const button = event.target.closest("button.minor-confirm, button.minor-dismiss");
      if (!button) return;
      const id = encodeURIComponent(button.dataset.reportId);
      let r;
      if (button.classList.contains("minor-confirm")) {
        if (!window.confirm("Confirm that this account belongs to a minor? Its erasure starts now.")) return;
        r = await call("POST", `/api/v1/admin/minor-reports/${id}/confirm`, {});
      } else {
        const reason = window.prompt("Why is this report dismissed?", "");
        if (reason === null) return;
        r = await call("POST", `/api/v1/admin/minor-reports/${id}/dismiss`, { reason });
      }
      if (r.ok) { window.location.reload(); return; }
      show(box, r);
    });
  }

  // ---- dark mode: follows the system until the toggle chooses; the choice is kept in this browser ----
  const THEME_KEY = "imagen_theme";
  const stored = localStorage.getItem(THEME_KEY);
  if (stored === "dark" || stored === "light") document.documentElement.dataset.theme = stored;

  function setupTheme() {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    const isDark = () => document.documentElement.dataset.theme === "dark" || (!document.documentElement.dataset.theme
      && window.matchMedia("(prefers-color-scheme: dark)").matches);
    const label = () => { button.setAttribute("aria-pressed", String(isDark())); };
    label();
    button.addEventListener("click", () => {
      const theme = isDark() ? "light" : "dark";
      document.documentElement.dataset.theme = theme;
      localStorage.setItem(THEME_KEY, theme);
      label();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupTheme();
    setupLogoutClears();
    if (document.body.dataset.page === "gallery") setupGallery();
    if (document.body.dataset.page === "generate") setupGenerate();
    if (document.body.dataset.page === "account") setupAccount();
    if (document.body.dataset.page === "admin-minor-reports") setupMinorReports();
  });
})();
