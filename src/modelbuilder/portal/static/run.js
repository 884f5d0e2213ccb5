// The run page: live status without reloading (polling the JSON API), trials, log tail, results,
// confusion-matrix drill-down, "Try the model", and Cancel.
"use strict";

(function () {
  const root = document.getElementById("run-page");
  if (!root) return;
  const api = root.dataset.api;
  let status = root.dataset.status;
  let active = root.dataset.active === "true";
  let lastTrials = Date.now();
  let lastLog = 0;
  const POLL_MS = 1000;
  const TRIALS_MS = 3000;
  const LOG_MS = 2000;
  const MAX_LOG_LINES = 1000;

  const $ = (id) => document.getElementById(id);

  function showMessage(text, kind) {
    const box = $("action-message");
    box.textContent = text;
    box.className = "alert" + (kind ? " " + kind : "");
    box.hidden = !text;
  }

  function render(run) {
    const badge = $("run-status");
    badge.textContent = run.status_label || run.status;
    badge.className = "badge status-" + run.status.toLowerCase();
    root.dataset.status = run.status;
    $("run-phase").textContent = run.phase || "";
    $("run-elapsed").textContent = mb.duration(run.elapsed_s);
    $("run-remaining").textContent = run.is_active ? mb.duration(run.remaining_s) : "–";
    $("run-accuracy").textContent = mb.percent(run.accuracy);
    $("run-backbone").textContent = run.backbone || "–";
    const progress = $("run-progress");
    const text = $("run-progress-text");
    if (run.progress !== null && run.progress !== undefined) {
      progress.value = run.progress;
      text.textContent = mb.percent(run.progress, 0);
    } else if (!run.is_active) {
      progress.value = run.status === "Completed" ? 1 : 0;
      text.textContent = "";
    }
    // A failed run's error, as on every channel: "Error: <message>" and "Hint: <fix>".
    $("run-error-message").textContent = run.error ? "Error: " + run.error : "";
    $("run-error-hint").textContent = run.error_hint ? "Hint: " + run.error_hint : "";
    $("run-error-hint").hidden = !run.error_hint;
    $("run-error").hidden = !run.error;
    $("cancel-button").hidden = !run.can_cancel;
    if (run.started_at && $("run-started").textContent.trim() === "–") {
      $("run-started").textContent = new Date(run.started_at).toLocaleString();
    }
  }

  async function refreshFragment(id) {
    const holder = $(id);
    holder.innerHTML = await mb.getText(holder.dataset.src);
    mb.localTimes(holder);
  }

  async function pollLog() {
    const pre = $("log-tail");
    const next = Number(pre.dataset.next || 0);
    const page = await mb.getJSON(api + "/logs?offset=" + next + "&limit=500");
    if (page.lines.length) {
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      pre.textContent += page.lines.map((line) => line.text + "\n").join("");
      const lines = pre.textContent.split("\n");
      if (lines.length > MAX_LOG_LINES) pre.textContent = lines.slice(-MAX_LOG_LINES).join("\n");
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      const empty = $("log-empty");
      if (empty) empty.remove();
    }
    pre.dataset.next = page.next_offset;
  }

  async function showResults() {
    await refreshFragment("results");
    $("results-card").hidden = false;
  }

  async function poll() {
    let again = true;
    try {
      const run = await mb.getJSON(api);
      const changed = run.status !== status;
      status = run.status;
      render(run);
      const now = Date.now();
      if (changed || now - lastTrials >= TRIALS_MS || !run.is_active) {
        lastTrials = now;
        await refreshFragment("trials");
      }
      if (!run.is_active || now - lastLog >= LOG_MS) {
        lastLog = now;
        await pollLog();
      }
      if (!run.is_active) {
        again = false;
        active = false;
        if (run.has_results || changed) await showResults();
      }
      if ($("action-message").dataset.lost) {
        delete $("action-message").dataset.lost;
        showMessage("");
      }
    } catch (error) {
      $("action-message").dataset.lost = "1";
      showMessage("Lost contact with the portal (" + error.message + "); retrying…", "error");
    }
    if (again) setTimeout(poll, POLL_MS);
  }

  // --- Cancel ---------------------------------------------------------------------------------------
  $("cancel-button").addEventListener("click", async function () {
    if (!window.confirm("Cancel this run? It stops at the next safe point and keeps its best model so far.")) return;
    this.disabled = true;
    try {
      const answer = await mb.post(api + "/cancel", null);
      showMessage(answer.message, "ok");
      const badge = $("run-status");
      badge.textContent = answer.run.status;
      badge.className = "badge status-" + answer.run.status.toLowerCase();
      $("cancel-button").hidden = true;
    } catch (error) {
      showMessage(error.message + (error.hint ? " " + error.hint : ""), "error");
    } finally {
      this.disabled = false;
    }
  });

  // --- Confusion matrix: a click on a cell shows its validation images ------------------------------
  function figure(item) {
    const image = item.thumbnail_url
      ? mb.element("img", { src: item.thumbnail_url, alt: item.path || "", loading: "lazy" })
      : mb.element("div", { class: "noimg", text: "no image" });
    const caption = mb.element("figcaption", {}, [
      mb.element("strong", { text: item.predicted_label }),
      document.createTextNode(" " + mb.percent(item.score, 0)),
      mb.element("br"),
      mb.element("span", { class: "muted", text: (item.path || "").split(/[\\/]/).pop() }),
    ]);
    return mb.element("figure", { class: "thumb" }, [image, caption]);
  }

  async function showCell(cell) {
    const panel = $("cell-images");
    document.querySelectorAll(".cm-cell.selected").forEach((el) => el.classList.remove("selected"));
    cell.classList.add("selected");
    const params = new URLSearchParams({ true_label: cell.dataset.true, predicted_label: cell.dataset.predicted, limit: "60" });
    $("cell-title").textContent = "True " + cell.dataset.true + ", predicted " + cell.dataset.predicted + " (loading…)";
    panel.hidden = false;
    const thumbs = $("cell-thumbs");
    thumbs.replaceChildren();
    try {
      const page = await mb.getJSON(panel.dataset.items + "?" + params.toString());
      $("cell-title").textContent = "True " + cell.dataset.true + ", predicted " + cell.dataset.predicted + ": " +
        page.total + " image" + (page.total === 1 ? "" : "s") + (page.total > page.items.length ? " (first " + page.items.length + " shown)" : "");
      page.items.forEach((item) => thumbs.appendChild(figure(item)));
      if (!page.items.length) thumbs.appendChild(mb.element("p", { class: "muted", text: "The evaluation lists no images for this cell." }));
    } catch (error) {
      $("cell-title").textContent = error.message;
    }
  }

  // --- Try the model ---------------------------------------------------------------------------------
  function renderPrediction(answer) {
    const list = mb.element("ul", { class: "scores" });
    answer.ranked.forEach(function (entry) {
      const bar = mb.element("span");
      bar.style.width = Math.round(entry.score * 100) + "%";
      list.appendChild(mb.element("li", {}, [
        mb.element("span", { text: entry.label }),
        mb.element("span", { class: "bar" }, [bar]),
        mb.element("span", { class: "num", text: mb.percent(entry.score) }),
      ]));
    });
    const best = answer.ranked[0];
    return [
      mb.element("p", { class: "prediction" }, [
        document.createTextNode("Prediction: "),
        mb.element("strong", { id: "try-label", text: answer.prediction }),
        document.createTextNode(" (" + mb.percent(best ? best.score : null) + ")"),
      ]),
      list,
    ];
  }

  async function tryImage(file) {
    const zone = $("try-zone");
    const output = $("try-output");
    const result = $("try-result");
    const preview = $("try-preview");
    output.hidden = false;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    result.replaceChildren(mb.element("p", { class: "muted", text: "Predicting…" }));
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const answer = await mb.post(zone.dataset.url, form);
      result.replaceChildren(...renderPrediction(answer));
    } catch (error) {
      result.replaceChildren(mb.element("div", { class: "alert error", id: "try-error", text: error.message + (error.hint ? " " + error.hint : "") }));
    }
  }

  document.addEventListener("click", function (event) {
    const cell = event.target.closest(".cm-cell");
    if (cell && !cell.disabled) showCell(cell);
  });
  document.addEventListener("change", function (event) {
    if (event.target.id === "try-file" && event.target.files.length) tryImage(event.target.files[0]);
  });
  document.addEventListener("dragover", function (event) {
    const zone = event.target.closest && event.target.closest("#try-zone");
    if (zone) { event.preventDefault(); zone.classList.add("over"); }
  });
  document.addEventListener("dragleave", function (event) {
    const zone = event.target.closest && event.target.closest("#try-zone");
    if (zone) zone.classList.remove("over");
  });
  document.addEventListener("drop", function (event) {
    const zone = event.target.closest && event.target.closest("#try-zone");
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) tryImage(event.dataTransfer.files[0]);
  });

  const logTail = $("log-tail");
  logTail.scrollTop = logTail.scrollHeight;  // show the newest lines first
  if (active) setTimeout(poll, POLL_MS);
})();
