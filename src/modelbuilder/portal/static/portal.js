// modelbuilder portal: helpers shared by the pages (no framework, no build step).
"use strict";

window.mb = (function () {
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  class PortalError extends Error {
    constructor(body, status) {
      super((body && body.error) || "Request failed (" + status + ")");
      this.hint = body && body.hint;
      this.status = status;
    }
  }

  async function readError(response) {
    let body = null;
    try { body = await response.json(); } catch (e) { body = { error: response.status + " " + response.statusText }; }
    return new PortalError(body, response.status);
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw await readError(response);
    return response.json();
  }

  async function getText(url) {
    const response = await fetch(url, { headers: { Accept: "text/html" }, cache: "no-store" });
    if (!response.ok) throw await readError(response);
    return response.text();
  }

  // State-changing requests carry the page's token; the browser adds the Origin header.
  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
      body: body,
      credentials: "same-origin",
    });
    if (!response.ok) throw await readError(response);
    return response.json();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    let s = Math.round(seconds);
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (h) return h + "h " + pad(m) + "m";
    if (m) return m + "m " + pad(s) + "s";
    return s + "s";
  }

  function percent(value, digits) {
    if (value === null || value === undefined) return "–";
    return (value * 100).toFixed(digits === undefined ? 1 : digits) + "%";
  }

  function localTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.title = el.getAttribute("datetime");
        el.textContent = when.toLocaleString();
      }
    });
  }

  function element(tag, attrs, children) {
    const el = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([key, value]) {
      if (key === "text") el.textContent = value;
      else if (key === "class") el.className = value;
      else el.setAttribute(key, value);
    });
    (children || []).forEach(function (child) { if (child) el.appendChild(child); });
    return el;
  }

  // The experiment page: "Compare" needs exactly two ticked runs.
  function wireCompare() {
    document.querySelectorAll("form[data-compare]").forEach(function (form) {
      const button = form.querySelector("button[type=submit]");
      const update = function () {
        const ticked = form.querySelectorAll("input[name=run]:checked").length;
        button.disabled = ticked < 2 || ticked > 4;
      };
      form.addEventListener("change", update);
      update();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    wireCompare();
  });

  return { csrfToken, getJSON, getText, post, duration, percent, localTimes, element, PortalError };
})();
