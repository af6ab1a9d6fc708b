// The billing page: a pack's button starts a Stripe Checkout Session and sends the browser there.
"use strict";

(function () {
  const api = window.imagenApi;
  const box = document.getElementById("billing-error");
  document.querySelectorAll("button.buy-pack").forEach((button) => {
    button.addEventListener("click", async () => {
      button.disabled = true;
      const r = await api.call("POST", "/api/v1/billing/checkout", { pack: button.dataset.pack });
      if (r.ok && r.data && r.data.url) {
        window.location.assign(r.data.url);
        return;
      }
      button.disabled = false;
      if (box) api.show(box, r);
    });
  });
})();
