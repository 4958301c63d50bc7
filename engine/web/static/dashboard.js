// jobcharts dashboard: keeps the overview live by short polling (no build step).
"use strict";
(function () {
  const base = document.body.dataset.base || "";
  const EVERY = 2000;

  function linkStates(holder) {
    // A click on a state of a live chart lists its jobs.
    const kinds = holder.dataset.kinds;
    if (!kinds) return;
    holder.querySelectorAll("g.node").forEach(function (node) {
      const title = node.querySelector("title");
      if (!title || title.textContent === "legend") return;
      node.style.cursor = "pointer";
      node.addEventListener("click", function () {
        const q = new URLSearchParams({ state: title.textContent, kind: kinds });
        window.location.href = base + "/jobs?" + q.toString();
      });
    });
  }

  async function load(holder) {
    try {
      const response = await fetch(holder.dataset.src, { cache: "no-store" });
      if (response.redirected) { window.location.reload(); return; }  // signed out
      const text = await response.text();
      if (response.ok) {
        holder.innerHTML = text;
        linkStates(holder);
      } else {
        holder.textContent = text;
        holder.classList.add("hint");
      }
    } catch (e) { /* the next round tries again */ }
  }

  async function refreshPanel() {
    const panel = document.getElementById("panel");
    if (!panel) return;
    try {
      const response = await fetch(panel.dataset.src, { cache: "no-store" });
      if (response.redirected) { window.location.reload(); return; }  // signed out
      if (response.ok) panel.innerHTML = await response.text();
    } catch (e) { /* offline for a moment */ }
  }

  function tick() {
    if (document.hidden) return;
    document.querySelectorAll(".diagram:not(.once)").forEach(load);
    refreshPanel();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("select.autosubmit").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    document.querySelectorAll(".diagram").forEach(load);
    if (document.getElementById("panel")) window.setInterval(tick, EVERY);
  });
})();
