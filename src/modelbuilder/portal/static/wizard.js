// modelbuilder portal: the new-run page (Environment, Data, Train) and the Consume page's copy buttons.
// Every write goes through the JSON API with the page's token (mb.post / send below).
"use strict";

(function () {
  const el = (tag, attrs, children) => window.mb.element(tag, attrs, children);

  async function send(method, url, body, isJson) {
    const headers = { "X-CSRF-Token": window.mb.csrfToken(), Accept: "application/json" };
    if (isJson) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, headers, body, credentials: "same-origin" });
    let data = null;
    try { data = await response.json(); } catch (e) { data = { error: response.status + " " + response.statusText }; }
    if (!response.ok) throw new window.mb.PortalError(data, response.status);
    return data;
  }

  function showMessage(box, error, okText) {
    box.replaceChildren();
    if (error) {
      box.appendChild(el("div", { class: "alert error" }, [
        el("strong", { text: error.message }), error.hint ? el("div", { class: "small", text: error.hint }) : null,
      ]));
    } else if (okText) {
      box.appendChild(el("div", { class: "alert ok", text: okText }));
    }
  }

  function wireCopyButtons() {
    document.querySelectorAll(".code-block button.copy").forEach(function (button) {
      button.addEventListener("click", async function () {
        const code = button.parentElement.querySelector("code").textContent;
        try {
          await navigator.clipboard.writeText(code);
        } catch (e) {  // no clipboard permission (plain http on another host): select the text instead
          const range = document.createRange();
          range.selectNodeContents(button.parentElement.querySelector("code"));
          window.getSelection().removeAllRanges();
          window.getSelection().addRange(range);
        }
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      });
    });
  }

  function wizard(root) {
    const ws = root.dataset.workspace;
    const api = "/api/workspaces/" + encodeURIComponent(ws);
    const namePattern = new RegExp(root.dataset.namePattern);
    let source = null;
    let blocked = true;

    // --- Environment ---------------------------------------------------------------------------
    const nameInput = document.getElementById("compute-name");
    const nameStatus = document.getElementById("compute-name-status");
    const computeMessage = document.getElementById("compute-message");
    let nameTimer = null;
    async function checkName() {
      const name = nameInput.value;
      if (!name) { nameStatus.textContent = ""; return false; }
      if (!namePattern.test(name)) {
        nameStatus.className = "small bad";
        nameStatus.textContent = "2–16 letters, digits and hyphens, starting with a letter or digit.";
        return false;
      }
      try {
        const result = await window.mb.getJSON(api + "/compute-names/check?name=" + encodeURIComponent(name));
        nameStatus.className = result.ok ? "small ok" : "small bad";
        nameStatus.textContent = result.ok ? result.message : result.message + " " + (result.hint || "");
        return result.ok;
      } catch (e) { nameStatus.textContent = e.message; return false; }
    }
    nameInput.addEventListener("input", function () {
      clearTimeout(nameTimer);
      nameTimer = setTimeout(checkName, 150);
    });
    const backend = document.getElementById("compute-backend");
    backend.addEventListener("change", function () {
      document.getElementById("compute-address-label").hidden = backend.value !== "ray";
    });
    document.getElementById("compute-form").addEventListener("submit", async function (event) {
      event.preventDefault();
      const size = document.querySelector("input[name=size]:checked");
      const body = { name: nameInput.value, size: size ? size.value : "", backend: backend.value };
      if (backend.value === "ray") body.address = document.getElementById("compute-address").value;
      try {
        const made = await send("POST", api + "/computes", JSON.stringify(body), true);
        sessionStorage.setItem("mb-compute-message", made.state === "Succeeded"
          ? "Compute " + made.name + " is ready." : "Compute " + made.name + " failed: " + (made.error || ""));
        window.location.reload();
      } catch (e) { showMessage(computeMessage, e); }
    });
    const saved = sessionStorage.getItem("mb-compute-message");
    if (saved) {
      sessionStorage.removeItem("mb-compute-message");
      document.getElementById("create-compute").open = true;
      showMessage(computeMessage, null, saved);
    }
    document.querySelectorAll("button.fix-delete").forEach(function (button) {
      button.addEventListener("click", async function () {
        try {
          await send("DELETE", api + "/computes/" + encodeURIComponent(button.dataset.name));
          sessionStorage.setItem("mb-compute-message", "Compute " + button.dataset.name + " was deleted; its name is free again.");
          window.location.reload();
        } catch (e) { showMessage(computeMessage, e); }
      });
    });
    document.querySelectorAll("button.fix-rename").forEach(function (button) {
      button.addEventListener("click", function () {
        document.getElementById("create-compute").open = true;
        const sizeRadio = document.querySelector("input[name=size][value='" + button.dataset.size + "']");
        if (sizeRadio) sizeRadio.checked = true;
        nameInput.value = button.dataset.name.slice(0, 14) + "-2";
        nameInput.focus();
        checkName();
      });
    });

    // --- Data ----------------------------------------------------------------------------------
    const dataMessage = document.getElementById("data-message");
    async function upload(form) {
      showMessage(dataMessage, null, "Uploading…");
      try {
        const stored = await send("POST", api + "/datasets", form);
        showMessage(dataMessage, null, "Stored as dataset " + stored.id + " (" + stored.files + " files" +
          (stored.created ? "" : ", the same data was uploaded before") + ").");
        await preview(stored.source);
      } catch (e) { showMessage(dataMessage, e); }
    }
    document.getElementById("zip-input").addEventListener("change", function (event) {
      const file = event.target.files[0];
      if (!file) return;
      const form = new FormData();
      form.append("archive", file, file.name);
      upload(form);
    });
    function uploadFiles(files) {
      const form = new FormData();
      files.forEach(function ([path, file]) { form.append("files", file, path); });
      upload(form);
    }
    document.getElementById("folder-input").addEventListener("change", function (event) {
      // webkitRelativePath starts with the chosen folder: the server drops that one top folder.
      uploadFiles(Array.from(event.target.files).map((f) => [f.webkitRelativePath || f.name, f]));
    });
    const zone = document.getElementById("dropzone");
    zone.addEventListener("dragover", function (event) { event.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", async function (event) {
      event.preventDefault();
      zone.classList.remove("over");
      const items = Array.from(event.dataTransfer.items || []).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry());
      const files = event.dataTransfer.files;
      if (files.length === 1 && /\.zip$/i.test(files[0].name) && !(items[0] && items[0].isDirectory)) {
        const form = new FormData();
        form.append("archive", files[0], files[0].name);
        upload(form);
        return;
      }
      const collected = [];
      async function walk(entry, prefix) {
        if (entry.isFile) {
          const file = await new Promise((ok, fail) => entry.file(ok, fail));
          collected.push([prefix + entry.name, file]);
        } else if (entry.isDirectory) {
          const reader = entry.createReader();
          let batch;
          do {
            batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
            for (const child of batch) await walk(child, prefix + entry.name + "/");
          } while (batch.length);
        }
      }
      for (const entry of items) if (entry) await walk(entry, "");
      if (collected.length) uploadFiles(collected);
    });

    document.querySelectorAll("a.use-upload").forEach(function (link) {
      link.addEventListener("click", function (event) { event.preventDefault(); preview(link.dataset.source); });
    });

    const picker = document.getElementById("folder-picker");
    let pickerRoot = 0;
    let pickerPath = "";
    async function browse(path) {
      try {
        const listing = await window.mb.getJSON("/api/data-roots/" + pickerRoot + "/folders?path=" + encodeURIComponent(path));
        pickerPath = listing.path;
        document.getElementById("folder-path").textContent = listing.root_path + (listing.path ? "/" + listing.path : "");
        const list = document.getElementById("folder-list");
        list.replaceChildren();
        if (listing.parent !== null) {
          const up = el("li", {}, [el("a", { href: "#", class: "folder-up", text: "↑ up" })]);
          up.firstChild.addEventListener("click", (e) => { e.preventDefault(); browse(listing.parent); });
          list.appendChild(up);
        }
        listing.folders.forEach(function (folder) {
          const link = el("a", { href: "#", class: "folder", "data-path": folder.path, text: folder.name + "/" });
          link.addEventListener("click", (e) => { e.preventDefault(); browse(folder.path); });
          list.appendChild(el("li", {}, [link, el("span", { class: "muted small", text: "  " + folder.folders + " folders, " + folder.files + " files" })]));
        });
      } catch (e) { showMessage(dataMessage, e); }
    }
    if (picker) {
      const select = document.getElementById("root-select");
      select.addEventListener("change", function () { pickerRoot = Number(select.value); browse(""); });
      document.getElementById("use-folder").addEventListener("click", function () {
        showMessage(dataMessage, null, "Checking the folder…");
        preview("folder:" + pickerRoot + ":" + pickerPath).then(() => showMessage(dataMessage));
      });
      browse("");
    }

    let previewSeq = 0;  // the data chosen last wins, whichever scan ends last
    async function preview(src) {
      const box = document.getElementById("preview");
      const seq = ++previewSeq;
      try {
        const data = await window.mb.getJSON(api + "/data/preview?source=" + encodeURIComponent(src));
        if (seq !== previewSeq) return;
        source = src;
        blocked = Boolean(data.blocking);
        box.hidden = false;
        document.getElementById("preview-source").textContent = src;
        const summary = document.getElementById("preview-summary");
        summary.replaceChildren(el("p", { text: data.images + " usable images in " + data.labels.length +
          " labels; " + data.skipped + " file(s) would be skipped." }));
        if (data.blocking) showMessage(summary.appendChild(el("div")), { message: data.blocking, hint: data.blocking_hint });
        const chart = document.getElementById("preview-chart");
        chart.innerHTML = data.chart_svg || "";  // server-rendered SVG, every text escaped
        const thumbs = document.getElementById("preview-thumbs");
        thumbs.replaceChildren();
        Object.entries(data.thumbnails).forEach(function ([label, urls]) {
          const strip = el("div", { class: "thumbs label-strip", "data-label": label });
          urls.forEach((url) => strip.appendChild(el("figure", { class: "thumb" }, [el("img", { src: url, alt: label, loading: "lazy" })])));
          thumbs.appendChild(el("div", {}, [el("h4", { text: label + " (" + (data.counts[label] || 0) + ")" }), strip]));
        });
        const body = document.querySelector("#preview-problems tbody");
        body.replaceChildren();
        data.problems.forEach(function (p) {
          body.appendChild(el("tr", { class: "problem problem-" + p.kind }, [
            el("td", { text: p.kind }), el("td", { class: "mono small", text: p.path || p.label || "" }),
            el("td", { class: "small", text: p.message }), el("td", { text: p.action }),
          ]));
        });
        if (!data.problems.length) body.appendChild(el("tr", {}, [el("td", { colspan: "4", class: "muted", text: "No problems found." })]));
        document.getElementById("estimate-button").disabled = blocked;
        document.getElementById("start-button").disabled = blocked;
        if (!blocked) estimate();
      } catch (e) { showMessage(dataMessage, e); }
    }

    // --- Train ---------------------------------------------------------------------------------
    const estimateBox = document.getElementById("estimate");
    let estimateSeq = 0;  // only the latest request's answer is shown (an older, slower one may end last)
    async function estimate() {
      if (!source) return;
      const seq = ++estimateSeq;
      const budget = document.getElementById("time-budget").value;
      const architecture = document.getElementById("architecture").value;
      try {
        const e = await window.mb.getJSON(api + "/train/estimate?source=" + encodeURIComponent(source) + "&time_budget=" + encodeURIComponent(budget) +
          "&architecture=" + encodeURIComponent(architecture));
        if (seq !== estimateSeq) return;
        const rows = e.trials.map((t) => el("tr", { class: "trial-" + t.status }, [
          el("td", { text: t.name }), el("td", { text: t.status }),
          el("td", { class: "num", text: t.status === "planned" ? window.mb.duration(t.budget_s) : "–" }),
          el("td", { class: "num", text: t.epochs ? t.epochs.toFixed(1) : "–" }),
        ]));
        const band = e.accuracy_low === null ? "no prediction" :
          window.mb.percent(e.accuracy_low) + " – " + window.mb.percent(e.accuracy_high);
        estimateBox.replaceChildren(...[
          el("p", { class: "estimate-features", text: e.images + " images will be featurized by " + e.backbone + " at " +
            e.resolution + " px" + (e.cached_images ? " (" + e.cached_images + " more are cached)" : "") +
            ", in about " + window.mb.duration(e.feature_seconds) + " of the " + window.mb.duration(e.budget_s) + "." }),
          el("p", { class: "small muted", text: e.feature_method }),
          el("table", { class: "data" }, [el("thead", {}, [el("tr", {}, [el("th", { text: "Trial" }), el("th", { text: "Plan" }),
            el("th", { class: "num", text: "Time" }), el("th", { class: "num", text: "Epochs" })])]), el("tbody", {}, rows)]),
          e.trials_note ? el("p", { class: "small muted", text: e.trials_note }) : null,
          el("p", { class: "estimate-accuracy" }, [el("strong", { text: "Predicted accuracy: " + band + ". " }),
            el("span", { class: "small muted", text: e.accuracy_method })]),
        ].filter(Boolean));
      } catch (err) { if (seq === estimateSeq) showMessage(estimateBox, err); }
    }
    document.getElementById("estimate-button").addEventListener("click", estimate);
    document.getElementById("time-budget").addEventListener("change", estimate);
    document.getElementById("architecture").addEventListener("change", estimate);
    document.getElementById("start-button").addEventListener("click", async function () {
      const compute = document.querySelector("input[name=compute]:checked");
      const bad = document.querySelector("input[name=on_bad_image]:checked");
      const body = {
        source, compute: compute ? compute.value : "local", on_bad_image: bad ? bad.value : "skip",
        time_budget: Number(document.getElementById("time-budget").value),
        architecture: document.getElementById("architecture").value,
      };
      const button = this;
      button.disabled = true;
      try {
        const started = await send("POST", api + "/train", JSON.stringify(body), true);
        window.location.assign(started.url);
      } catch (e) { showMessage(document.getElementById("train-message"), e); button.disabled = false; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireCopyButtons();
    const root = document.getElementById("wizard");
    if (root) wizard(root);
  });
})();
