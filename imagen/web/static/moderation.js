// Moderation pages (/admin/cases/{id}, /admin/hash-banks) and the gallery's "Report" button.
// Every write goes to the JSON API with the X-CSRF-Token header; after success the page reloads to show the result.
"use strict";

(function () {
  const IMPORT_REPORT_KEY = "imagen_bank_import_report"; // survives the reload that follows an import

  const { call, show } = window.imagenApi; // api.js

  // ---- a case: dismiss, remove, suspend, restore, report, preserve ----
  function setupCase() {
    const form = document.getElementById("case-actions");
    if (!form) return;
    const box = document.getElementById("action-error");
    const buttons = form.querySelectorAll("button.case-action");
    for (const button of buttons) {
      button.addEventListener("click", async () => {
        box.hidden = true;
        const action = button.dataset.action;
        if (button.dataset.confirm === "true") {
          const question = action === "report"
            ? "Send this case and its preserved files to NCMEC's CyberTipline? This cannot be undone."
            : "Remove the reported content? The images are quarantined as evidence and deleted for the user.";
          if (!window.confirm(question)) return;
        }
        buttons.forEach((b) => { b.disabled = true; });
        const url = `/api/v1/admin/cases/${encodeURIComponent(form.dataset.caseId)}/actions`;
        const body = { action, note: form.elements.note.value };
        if (action === "preserve") body.days = Number(form.elements.days.value);
        const r = await call("POST", url, body);
        if (r.ok) { window.location.reload(); return; }
        show(box, r);
        buttons.forEach((b) => { b.disabled = false; });
      });
    }
  }

  // ---- accounts: roles ----
  function setupRoles() {
    const box = document.getElementById("role-error");
    for (const select of document.querySelectorAll("select.user-role")) {
      select.addEventListener("change", async () => {
        box.hidden = true;
        select.disabled = true;
        const url = `/api/v1/admin/users/${encodeURIComponent(select.dataset.userId)}/role`;
        const r = await call("PUT", url, { role: select.value });
        if (r.ok) { window.location.reload(); return; }
        show(box, r);
        select.disabled = false;
      });
    }
  }

  // ---- accounts: suspend, restore, delete (erasure; asks first) ----
  const ACCOUNT_CONFIRM = {
    suspend: (email) => `Suspend ${email}? Their sessions and API keys stop working at once.`,
    delete: (email) => `Delete ${email} and all of their data? This is the account erasure; it cannot be undone.`,
  };
  function setupAccountActions() {
    const box = document.getElementById("role-error");
    for (const button of document.querySelectorAll("button.account-action")) {
      button.addEventListener("click", async () => {
        box.hidden = true;
        const { action, userId, email } = button.dataset;
        if (ACCOUNT_CONFIRM[action] && !window.confirm(ACCOUNT_CONFIRM[action](email))) return;
        button.disabled = true;
        const base = `/api/v1/admin/users/${encodeURIComponent(userId)}`;
        const r = action === "delete" ? await call("DELETE", base) : await call("POST", `${base}/${action}`);
        if (r.ok) { window.location.reload(); return; }
        show(box, r);
        button.disabled = false;
      });
    }
  }

  // ---- hash banks: enable/disable, import ----
  function importSummary(report) {
    const text = `Imported into ${report.bank.name}: ${report.added} added, ${report.duplicates} duplicates, `
      + `${report.bad_count} bad lines.`;
    const lines = report.bad_lines.slice(0, 20).map((b) => `line ${b.line}: ${b.reason}`);
    if (report.bad_count > lines.length && lines.length) lines.push(`… and ${report.bad_count - lines.length} more`);
    return [text, ...lines].join("\n");
  }

  function setupBanks() {
    const errorBox = document.getElementById("bank-error");
    for (const button of document.querySelectorAll("button.bank-toggle")) {
      button.addEventListener("click", async () => {
        errorBox.hidden = true;
        button.disabled = true;
        const r = await call("PATCH", `/api/v1/admin/hash-banks/${encodeURIComponent(button.dataset.bankId)}`,
          { enabled: button.dataset.enabled === "true" });
        if (r.ok) { window.location.reload(); return; }
        show(errorBox, r);
        button.disabled = false;
      });
    }

    const form = document.getElementById("bank-import");
    if (!form) return;
    const reportBox = document.getElementById("import-report");
    const importError = document.getElementById("import-error");
    const saved = window.sessionStorage.getItem(IMPORT_REPORT_KEY);
    if (saved) {
      window.sessionStorage.removeItem(IMPORT_REPORT_KEY);
      reportBox.textContent = saved;
      reportBox.hidden = false;
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      importError.hidden = true;
      reportBox.hidden = true;
      const body = new FormData(form);
      // An empty source would overwrite the source of an existing bank: leave it out instead.
      if (!String(body.get("source") || "").trim()) body.delete("source");
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      const r = await call("POST", "/api/v1/admin/hash-banks", body);
      if (r.ok) {
        window.sessionStorage.setItem(IMPORT_REPORT_KEY, importSummary(r.data));
        window.location.reload();
        return;
      }
      show(importError, r);
      submit.disabled = false;
    });
  }

  // ---- gallery: "Report this image" ----
  function setupReports() {
    const box = document.getElementById("form-error");
    for (const button of document.querySelectorAll("button.report-output")) {
      button.addEventListener("click", async () => {
        const reason = window.prompt("Why are you reporting this image? (optional)", "");
        if (reason === null) return;
        if (box) box.hidden = true;
        button.disabled = true;
        const r = await call("POST", "/api/v1/reports", { output_id: button.dataset.outputId, reason });
        if (r.ok) { button.textContent = "Reported"; return; }
        if (box) show(box, r);
        button.disabled = false;
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupCase();
    setupBanks();
    setupRoles();
    setupAccountActions();
    setupReports();
  });
})();
