"use strict";
(() => {
  // ---------------------------------------------------------------- settings
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = (() => {
    const n = Number(params.get("refresh"));
    return Number.isFinite(n) && n >= 100 ? Math.floor(n) : 2000;
  })();
  const READ_TIMEOUT_MS = Math.max(10000, REFRESH_MS);
  const TOKEN_KEY = "orchestrator.token";
  const TOKEN_MSG = "this API requires a token for changes and DLQ looks: enter it above";
  const DASH = "\u2014";

  const $ = (id) => document.getElementById(id);
  const ui = {
    main: $("main"), leader: $("leader"), healthDetail: $("health-detail"), status: $("status"),
    token: $("token"), banner: $("banner"), message: $("message"), messageClose: $("message-close"),
    queues: document.querySelector("#queues tbody"), dlqs: document.querySelector("#dlqs tbody"),
    workers: document.querySelector("#workers tbody"), jobs: document.querySelector("#jobs tbody"),
    jobStatus: $("job-status"), jobQueue: $("job-queue"), jobLimit: $("job-limit"),
    prevPage: $("prev-page"), nextPage: $("next-page"), pageInfo: $("page-info"),
    dlqBrowser: $("dlq-browser"), dlqName: $("dlq-browser-name"),
    queuePage: $("queue-page"), queuePageName: $("queue-page-name"), queuePageNow: $("queue-page-now"),
    dlqMessages: document.querySelector("#dlq-messages tbody"), dlqAll: $("dlq-select-all"),
    dlqRedrive: $("dlq-redrive-selected"), dlqDelete: $("dlq-delete-selected"),
  };

  // ---------------------------------------------------------------- DOM helpers (no innerHTML)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  function setText(node, text) {
    const t = String(text);
    if (node.textContent !== t) node.textContent = t;
  }
  function setTitle(node, title) {
    const t = title || "";
    if (node.title !== t) node.title = t;
  }
  // Rebuild a cell's children only when its content signature changes (keeps text selectable).
  function setContent(node, sig, build) {
    if (node._sig === sig) return;
    node._sig = sig;
    node.replaceChildren(...build());
  }

  /** Keyed update of a tbody: rows are kept, updated in place, and only moved when needed. */
  // ---------------------------------------------------------------- charts (SVG, no library)
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }
  /** A chart of one or two lines (values may be null: a gap), drawn into `w` x `h`. */
  function chart(w, h, cls) {
    const root = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: `chart ${cls || ""}`,
      role: "img" });
    root._lines = [svg("path", { class: "line a" }), svg("path", { class: "line b" })];
    root.append(...root._lines);
    return root;
  }
  /** Draw each of `series` as a line; `scale` (optional) is the value at the top. */
  function drawChart(root, series, title, scale) {
    const w = Number(root.getAttribute("width")), h = Number(root.getAttribute("height"));
    root._lines.forEach((path, i) => {
      const values = series[i] || [];
      const top = Math.max(1, scale || 0, ...values.filter((v) => v !== null));
      let d = "";
      values.forEach((v, x) => {
        if (v === null) return;
        const px = values.length > 1 ? (x * (w - 2)) / (values.length - 1) + 1 : w / 2;
        const py = h - 1 - (v * (h - 2)) / top;
        d += `${d && values[x - 1] !== null ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`;
      });
      path.setAttribute("d", d);
    });
    setTitle(root, title);
  }

  function syncRows(tbody, items, keyOf, create, update, emptyContent) {
    const rows = tbody._rows || (tbody._rows = new Map());
    const wanted = new Set();
    const list = [];
    for (const item of items) {
      const key = String(keyOf(item));
      if (wanted.has(key)) continue;
      wanted.add(key);
      list.push([key, item]);
    }
    for (const [key, tr] of rows) {
      if (!wanted.has(key)) { tr.remove(); rows.delete(key); }
    }
    if (list.length === 0) {
      if (!tbody._empty) {
        const cols = tbody.parentNode.querySelectorAll("thead th").length || 1;
        tbody._empty = el("tr", { class: "empty" }, el("td", { colspan: cols }));
      }
      const td = tbody._empty.firstChild;
      setContent(td, JSON.stringify(emptyContent), () => emptyContent.map((part) =>
        Array.isArray(part) ? el("code", { text: part[0] }) : document.createTextNode(part)));
      if (tbody._empty.parentNode !== tbody) tbody.appendChild(tbody._empty);
      return;
    }
    if (tbody._empty && tbody._empty.parentNode) tbody._empty.remove();
    list.forEach(([key, item], i) => {
      let tr = rows.get(key);
      if (!tr) { tr = create(key, item); rows.set(key, tr); }
      update(tr, item);
      const at = tbody.children[i];
      if (at !== tr) tbody.insertBefore(tr, at || null);
    });
  }

  // ---------------------------------------------------------------- formatting
  const pad = (n) => String(n).padStart(2, "0");
  const hms = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const num = (v) => (v === null || v === undefined ? DASH : String(v));
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function parseTime(s) {
    if (!s) return null;
    let t = String(s);
    // The API sends UTC; a timestamp without a zone designator must not be read as local time.
    if (/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(t)) t += "Z";
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  // This browser's time zone, as times on the page are shown in it: "UTC" or "UTC+01:00".
  function zone(d) {
    const off = -d.getTimezoneOffset();
    if (off === 0) return "UTC";
    const a = Math.abs(off);
    return `UTC${off > 0 ? "+" : "-"}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
  }
  function shortTime(s) {
    const d = parseTime(s);
    if (!d) return DASH;
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return `${hms(d)} ${zone(d)}`;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms(d)} ${zone(d)}`;
  }
  function isoTitle(s) {
    const d = parseTime(s);
    return d ? d.toISOString() : "";
  }
  function duration(sec) {
    if (!Number.isFinite(sec) || sec < 0) return "";
    if (sec < 60) return `${sec.toFixed(1)} s`;
    const m = Math.floor(sec / 60);
    if (m < 60) return `${m} min ${Math.round(sec % 60)} s`;
    const h = Math.floor(m / 60);
    return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  // ---------------------------------------------------------------- messages
  let messageTimer = null;
  function showMessage(text, kind) {
    clearTimeout(messageTimer);
    ui.banner.className = "banner " + (kind === "ok" ? "ok" : "error");
    ui.message.textContent = text;
    if (kind === "ok") messageTimer = setTimeout(hideMessage, 8000);
  }
  function hideMessage() {
    clearTimeout(messageTimer);
    ui.banner.className = "banner hidden";
    ui.message.textContent = "";
  }
  ui.messageClose.addEventListener("click", hideMessage);

  // ---------------------------------------------------------------- token
  try { ui.token.value = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { /* storage off */ }
  $("token-form").addEventListener("submit", (ev) => ev.preventDefault());
  ui.token.addEventListener("input", () => {
    ui.token.classList.remove("needed");
    try {
      if (ui.token.value) sessionStorage.setItem(TOKEN_KEY, ui.token.value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage off */ }
  });

  // ---------------------------------------------------------------- HTTP
  class HttpError extends Error {
    constructor(message, status, network) {
      super(message);
      this.status = status;
      this.network = network;
    }
  }
  async function readBody(res) {
    const text = await res.text();
    if (!text) return null;
    try { return JSON.parse(text); } catch (e) { return { message: text.slice(0, 300) }; }
  }
  function errorText(res, body) {
    if (body && typeof body === "object") {
      if (body.message) return String(body.message);
      if (body.error) return `${res.status} ${body.error}`;
    }
    return `${res.status} ${res.statusText || "error"}`.trim();
  }

  /** GET JSON; `lenient` accepts an error status whose body passes the check (e.g. /health 503). */
  async function getJSON(path, lenient) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), READ_TIMEOUT_MS);
    let res;
    try {
      res = await fetch(path, { headers: authorized({ Accept: "application/json" }), cache: "no-store", signal: ctl.signal });
    } catch (e) {
      throw new HttpError(ctl.signal.aborted ? `no answer in ${READ_TIMEOUT_MS / 1000} s` : e.message, 0, true);
    } finally {
      clearTimeout(timer);
    }
    let body;
    try { body = await readBody(res); } catch (e) { throw new HttpError(e.message, res.status, true); }
    if (res.status === 401) {
      ui.token.classList.add("needed");
      throw new HttpError(TOKEN_MSG, 401, false);
    }
    if (!res.ok && !(lenient && lenient(body))) throw new HttpError(errorText(res, body), res.status, false);
    return body;
  }
  /** The headers plus the token, when one is entered (writes and DLQ looks need it). */
  function authorized(headers) {
    const token = ui.token.value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }

  async function write(method, path, payload) {
    const headers = authorized({ "Content-Type": "application/json", Accept: "application/json" });
    let res;
    try {
      res = await fetch(path, { method, headers, body: JSON.stringify(payload), cache: "no-store" });
    } catch (e) {
      throw new HttpError("API unreachable: " + e.message, 0, true);
    }
    let body = null;
    try { body = await readBody(res); } catch (e) { /* keep null */ }
    if (res.status === 401) {
      ui.token.classList.add("needed");
      throw new HttpError(TOKEN_MSG, 401, false);
    }
    if (!res.ok) throw new HttpError(errorText(res, body), res.status, false);
    return body;
  }
  const queuePath = (name) => "/api/queues/" + encodeURIComponent(name);

  // ---------------------------------------------------------------- state
  let queues = [];                 // last good /api/queues answer (patched by write answers)
  const qstate = new Map();        // name -> per-row client state
  function stateOf(name) {
    let s = qstate.get(name);
    if (!s) {
      s = { server: {}, saving: false, pausing: false, redriving: false, sample: null, rate: null };
      qstate.set(name, s);
    }
    return s;
  }
  function mergeQueue(q) {
    if (!q || typeof q !== "object" || typeof q.name !== "string") return null;
    const i = queues.findIndex((x) => x.name === q.name);
    if (i < 0) return null;
    queues = queues.slice();
    queues[i] = Object.assign({}, queues[i], q);
    return queues[i];
  }

  // ---------------------------------------------------------------- queues table
  // The settings a row edits: PATCHed together from one Save (all or nothing).
  // kind: "whole" (an integer from `min`), "number", or "rate" (a number; empty: no limit).
  const EDITABLE = [
    { field: "concurrency", label: "concurrency", kind: "whole", min: 1 },
    { field: "processes", label: "processes", kind: "whole", min: 1 },
    { field: "batchSize", label: "batch size", kind: "whole", min: 1 },
    { field: "batchWindow", label: "batch window", kind: "number", min: 0 },
    { field: "rateLimit", label: "rate limit", kind: "rate", min: 0 },
    { field: "priority", label: "priority", kind: "whole", min: 0 },
    { field: "maxShards", label: "max shards", kind: "whole", min: 1 },
  ];
  // A setting as its input shows it (no rate limit: empty).
  const shown = (value) => (value === null ? "" : String(value));
  // What an input's text means for its setting; undefined when it means nothing.
  function parseSetting(kind, raw) {
    if (kind === "rate" && (raw === "" || raw.toLowerCase() === "none")) return null;
    if (kind === "whole") return /^[+-]?\d+$/.test(raw) ? parseInt(raw, 10) : undefined;
    return /^[+-]?(\d+\.?\d*|\.\d+)$/.test(raw) ? parseFloat(raw) : undefined;
  }
  const isDirty = (input) => input.classList.contains("dirty");

  function createQueueRow(name) {
    const c = { inputs: {} };
    const td = (field, cls) => (c[field] = el("td", { "data-field": field, class: cls }));
    const st = stateOf(name);
    const cells = EDITABLE.map(({ field, label, kind, min }) => {
      const whole = kind === "whole";
      const input = el("input", { "data-field": field, type: "number", min: String(min),
        step: whole ? "1" : "0.1", inputmode: whole ? "numeric" : "decimal", "aria-label": `${label} of ${name}`,
        placeholder: kind === "rate" ? "none" : "" });
      c.inputs[field] = input;
      const markDirty = () => {
        const dirty = input.value !== shown(st.server[field]);
        input.classList.toggle("dirty", dirty);
        setTitle(input, dirty ? "unsaved: Enter or Save applies, Esc reverts" : "");
      };
      input.addEventListener("input", markDirty);
      input.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") { ev.preventDefault(); saveSettings(name); }
        else if (ev.key === "Escape" && st.server[field] !== undefined) { input.value = shown(st.server[field]); markDirty(); }
      });
      input.addEventListener("blur", () => {
        if (!isDirty(input) && st.server[field] !== undefined && input.value !== shown(st.server[field])) input.value = shown(st.server[field]);
      });
      return el("td", { class: "conc" }, input);
    });
    const save = el("button", { type: "button", "data-action": "save-settings" }, "Save");
    const paused = el("input", { type: "checkbox", "data-action": "toggle-paused", "aria-label": `pause ${name}` });
    const adaptive = el("input", { type: "checkbox", "data-action": "toggle-adaptive", "aria-label": `adaptive concurrency of ${name}` });
    c.save = save; c.paused = paused; c.adaptive = adaptive;
    const tr = el("tr", { "data-queue": name },
      td("name", "name"), td("where", "mono"), td("visible", "num"), td("inFlight", "num"), td("delayed", "num"),
      td("worker", "mono"), td("rate", "num"), td("handled", "num"), td("failed", "num"),
      el("td", { class: "spark" }, (c.spark = chart(120, 24, "spark"))),
      td("effective", "num"), ...cells, el("td", { class: "save" }, save),
      el("td", { class: "paused-cell" }, adaptive),
      el("td", { class: "paused-cell" }, paused),
      td("handler", "handler mono"));
    tr._c = c;
    c.name.addEventListener("click", () => openQueue(name));
    c.name.classList.add("link");
    save.addEventListener("click", () => saveSettings(name));
    paused.addEventListener("change", () => toggle(name, "paused", paused.checked));
    adaptive.addEventListener("change", () => toggle(name, "adaptive", adaptive.checked));
    return tr;
  }

  function updateQueueRow(tr, q) {
    const c = tr._c;
    const st = stateOf(q.name);
    setText(c.name, q.name);
    setTitle(c.name, [q.queueUrl, `visibility timeout ${q.visibilityTimeout} s`,
      q.visible === null || q.visible === undefined ? "queue not found in SQS" : ""].filter(Boolean).join("\n"));
    setText(c.where, [q.region || "default region", q.account, q.managed === false ? "adopted" : ""]
      .filter(Boolean).join(" · "));
    setTitle(c.where, [q.managed === false ? "adopted: made outside orchestrator; never created, changed, purged or deleted by it" : "created by orchestrator",
      q.roleArn ? `reached as ${q.roleArn}` : "", q.missing ? "not found in SQS at the last check" : ""].filter(Boolean).join("\n"));
    c.where.classList.toggle("bad", !!q.missing);
    setText(c.visible, num(q.visible));
    // Backlog age: how long its messages wait for a consumer, how late they arrive.
    setTitle(c.visible, [q.waitSeconds > 0 ? `waiting for a consumer for ${q.waitSeconds.toFixed(0)} s` : "",
      q.oldestAgeSeconds !== null && q.oldestAgeSeconds !== undefined ? `oldest recent message arrived ${q.oldestAgeSeconds.toFixed(1)} s after it was sent` : ""]
      .filter(Boolean).join("\n"));
    c.visible.classList.toggle("bad", q.waitSeconds > 0);
    setText(c.inFlight, num(q.inFlight));
    setText(c.delayed, num(q.delayed));
    setText(c.worker, q.worker ? q.worker + (q.shards > 1 ? ` +${q.shards - 1}` : "") : DASH);
    setTitle(c.worker, [q.jobId ? `job ${q.jobId}` : "", q.shards > 1 ? `${q.shards} shards` : ""].filter(Boolean).join("\n"));
    const effective = q.effectiveConcurrency;
    setText(c.effective, effective === null || effective === undefined ? DASH : String(effective));
    c.effective.classList.toggle("bad", effective !== null && effective !== undefined && effective < q.concurrency);
    setTitle(c.effective, "handlers it may run at once now" + (q.adaptive ? " (adaptive: halves on failures, grows back by one a second)" : ""));
    setText(c.rate, st.rate === null ? DASH : st.rate.toFixed(1));
    setText(c.handled, num(q.handled));
    setText(c.failed, num(q.failed));
    c.failed.classList.toggle("bad", q.failed > 0);
    setText(c.handler, q.handler || DASH);
    setTitle(c.handler, q.handler || "");
    const s = charts.queues[q.name];
    if (s) drawChart(c.spark, [perSecond(s.handled), s.depth],
      `last hour: messages handled per second (line) and depth (dashed); now ${perSecond(s.handled).slice(-1)[0].toFixed(2)}/s`);
    tr.classList.toggle("paused", !!q.paused);
    tr.classList.toggle("missing", q.visible === null || q.visible === undefined || !!q.missing);

    // Settings: never overwrite what the user is editing.
    for (const { field } of EDITABLE) {
      const input = c.inputs[field];
      if (q[field] === undefined) continue;
      st.server[field] = q[field];
      const value = shown(q[field]);
      if (isDirty(input) && input.value === value) input.classList.remove("dirty");
      if (!isDirty(input) && document.activeElement !== input && input.value !== value) input.value = value;
    }
    c.save.disabled = st.saving;

    if (!st.pausing) c.paused.checked = !!q.paused;
    c.paused.disabled = st.pausing;
    if (!st.pausing) c.adaptive.checked = !!q.adaptive;
    c.adaptive.disabled = st.pausing;
    setTitle(c.paused, q.paused ? `${q.name} is paused: uncheck to resume` : `check to pause ${q.name}`);
  }

  function createDlqRow(name) {
    const c = {
      queue: el("td", { "data-field": "queue", class: "name" }),
      dlqName: el("td", { "data-field": "dlqName", class: "mono" }),
      dlqVisible: el("td", { "data-field": "dlqVisible", class: "num" }),
      maxReceiveCount: el("td", { "data-field": "maxReceiveCount", class: "num" }),
      redrive: el("button", { type: "button", "data-action": "redrive" }, "Redrive"),
    };
    c.browse = el("button", { type: "button", "data-action": "browse-dlq" }, "Browse");
    const tr = el("tr", { "data-dlq": name }, c.queue, c.dlqName, c.dlqVisible, c.maxReceiveCount,
      el("td", {}, c.browse, " ", c.redrive));
    tr._c = c;
    c.redrive.addEventListener("click", () => redrive(name));
    c.browse.addEventListener("click", () => browseDlq(name));
    return tr;
  }
  function updateDlqRow(tr, q) {
    const c = tr._c;
    setText(c.queue, q.name);
    setText(c.dlqName, q.dlqName);
    setTitle(c.dlqName, q.dlqUrl || "");
    setText(c.dlqVisible, num(q.dlqVisible));
    c.dlqVisible.classList.toggle("bad", q.dlqVisible > 0);
    setText(c.maxReceiveCount, num(q.maxReceiveCount));
    const empty = q.dlqVisible === null || q.dlqVisible === undefined || q.dlqVisible === 0;
    c.redrive.disabled = empty || stateOf(q.name).redriving;
    setTitle(c.redrive, empty ? "nothing to redrive" : `move the DLQ's messages back to ${q.name}`);
  }

  function renderQueues() {
    syncRows(ui.queues, queues, (q) => q.name, createQueueRow, updateQueueRow,
      ["no queues yet \u2014 create one with ", ["orchestrator queue create NAME"]]);
    const withDlq = queues.filter((q) => q.dlqName);
    syncRows(ui.dlqs, withDlq, (q) => q.name, createDlqRow, updateDlqRow,
      queues.length
        ? ["no queue has a dead-letter queue \u2014 create one with ", ["orchestrator queue create NAME --dlq"]]
        : ["no dead-letter queues yet"]);
    setText($("queues-count"), queues.length ? String(queues.length) : "");
    setText($("dlqs-count"), withDlq.length ? String(withDlq.length) : "");
    for (const name of qstate.keys()) if (!queues.some((q) => q.name === name)) qstate.delete(name);
  }

  function takeQueueSample(list, t) {
    for (const q of list) {
      const st = stateOf(q.name);
      const s = st.sample;
      const handled = Number(q.handled);
      if (s && Number.isFinite(handled) && handled >= s.handled && t > s.t) {
        st.rate = (handled - s.handled) / ((t - s.t) / 1000);
      } else {
        st.rate = null; // first sample, or the counter went back (metrics reset)
      }
      st.sample = Number.isFinite(handled) ? { handled, t } : null;
    }
  }

  // ---------------------------------------------------------------- actions
  async function saveSettings(name) {
    const tr = ui.queues._rows && ui.queues._rows.get(name);
    if (!tr) return;
    const st = stateOf(name);
    if (st.saving) return;
    const changes = {};
    const typed = {};
    for (const { field, label, kind } of EDITABLE) {
      const input = tr._c.inputs[field];
      const raw = input.value.trim();
      if (!isDirty(input) && raw === shown(st.server[field])) continue;
      const value = parseSetting(kind, raw);
      if (value === undefined) {
        const wanted = { whole: "a whole number", number: "a number", rate: "a number, or empty for none" };
        showMessage(`${label} of ${name} must be ${wanted[kind]}`, "error");
        return;
      }
      changes[field] = value;
      typed[field] = raw;
    }
    if (!Object.keys(changes).length) {
      showMessage(`nothing to save for ${name}`, "ok");
      return;
    }
    st.saving = true;
    tr._c.save.disabled = true;
    try {
      const body = await write("PATCH", queuePath(name), changes);
      const q = mergeQueue(body) || Object.assign({}, changes);
      const saved = [];
      for (const { field, label } of EDITABLE) {
        if (!(field in changes)) continue;
        const value = q[field] !== undefined ? q[field] : changes[field];
        st.server[field] = value;
        const input = tr._c.inputs[field];
        if (input.value.trim() === typed[field]) { // the user did not type on meanwhile
          input.classList.remove("dirty");
          input.value = shown(value);
        }
        saved.push(`${label} ${value === null ? "none" : value}`);
      }
      showMessage(`${name}: ${saved.join(", ")} saved`, "ok");
    } catch (e) {
      showMessage(e.message, "error");
    } finally {
      st.saving = false;
      renderQueues();
    }
  }

  // A checkbox setting (paused, adaptive): PATCHed at once.
  async function toggle(name, field, value) {
    const st = stateOf(name);
    const tr = ui.queues._rows && ui.queues._rows.get(name);
    st.pausing = true;
    if (tr) tr._c[field].disabled = true;
    try {
      const body = await write("PATCH", queuePath(name), { [field]: value });
      if (!mergeQueue(body)) mergeQueue({ name, [field]: value });
      const said = field === "paused" ? (value ? "paused" : "resumed") : `adaptive ${value ? "on" : "off"}`;
      showMessage(`${name} ${said}`, "ok");
    } catch (e) {
      if (tr) tr._c[field].checked = !value;
      showMessage(e.message, "error");
    } finally {
      st.pausing = false;
      renderQueues();
    }
  }

  async function redrive(name) {
    const q = queues.find((x) => x.name === name);
    if (!q) return;
    const st = stateOf(name);
    if (st.redriving) return;
    if (!window.__noConfirm &&
        !window.confirm(`Move ${plural(q.dlqVisible || 0, "message")} from ${q.dlqName} back to ${name}?`)) return;
    st.redriving = true;
    renderQueues();
    try {
      const body = await write("POST", queuePath(name) + "/redrive", {});
      const moved = body && Number.isFinite(body.moved) ? body.moved : 0;
      showMessage(`redrove ${plural(moved, "message")} from ${name}'s DLQ`, "ok");
    } catch (e) {
      showMessage(e.message, "error");
    } finally {
      st.redriving = false;
      renderQueues();
      requestRefresh();
    }
  }

  // ---------------------------------------------------------------- DLQ browser
  let browsing = null;      // the queue whose DLQ messages are shown
  let deadLetters = [];     // what the last look found
  const selected = new Set();

  async function browseDlq(name) {
    browsing = name;
    selected.clear();
    ui.dlqBrowser.hidden = false;
    setText(ui.dlqName, `${name}'s DLQ`);
    try {
      const found = await getJSON(queuePath(name) + "/dlq?limit=50");
      deadLetters = Array.isArray(found) ? found : [];
    } catch (e) {
      deadLetters = [];
      showMessage(e.message, "error");
    }
    renderDeadLetters();
  }

  function createDeadLetterRow(id) {
    const c = {};
    const td = (field, cls) => (c[field] = el("td", { "data-field": field, class: cls }));
    c.pick = el("input", { type: "checkbox", "aria-label": `select message ${id}` });
    c.redrive = el("button", { type: "button", "data-action": "redrive-one" }, "Redrive");
    c.remove = el("button", { type: "button", "data-action": "delete-one" }, "Delete");
    const tr = el("tr", { "data-message": id }, el("td", {}, c.pick), td("messageId", "mono"),
      td("receiveCount", "num"), td("lastError", "error-cell"), td("body", "mono body-cell"),
      el("td", {}, c.redrive, " ", c.remove));
    tr._c = c;
    c.pick.addEventListener("change", () => {
      if (c.pick.checked) selected.add(id); else selected.delete(id);
      renderDeadLetters();
    });
    c.redrive.addEventListener("click", () => actOnDeadLetters("redrive", [id]));
    c.remove.addEventListener("click", () => actOnDeadLetters("delete", [id]));
    return tr;
  }

  function updateDeadLetterRow(tr, d) {
    const c = tr._c;
    setText(c.messageId, d.messageId);
    setText(c.receiveCount, num(d.receiveCount));
    const f = d.lastFailure;
    setText(c.lastError, f ? `${f.errorType}: ${f.error}` : DASH);
    setTitle(c.lastError, f ? `${f.at}\n${f.traceback}` : "no failure kept for it (older than JOB_TTL_DAYS, or never failed here)");
    setText(c.body, d.body.length > 200 ? d.body.slice(0, 200) + "\u2026" : d.body);
    setTitle(c.body, d.body + (d.bodyTruncated ? "\u2026" : ""));
    c.pick.checked = selected.has(d.messageId);
  }

  function renderDeadLetters() {
    syncRows(ui.dlqMessages, deadLetters, (d) => d.messageId, createDeadLetterRow, updateDeadLetterRow,
      ["the DLQ is empty"]);
    ui.dlqRedrive.disabled = ui.dlqDelete.disabled = selected.size === 0;
    ui.dlqAll.checked = deadLetters.length > 0 && selected.size === deadLetters.length;
  }

  async function actOnDeadLetters(action, ids) {
    if (!browsing || !ids.length) return;
    const name = browsing;
    const path = queuePath(name) + (action === "redrive" ? "/redrive" : "/dlq/purge");
    try {
      const body = await write("POST", path, { ids });
      const n = action === "redrive" ? body.moved : body.deleted;
      const done = `${action === "redrive" ? "redrove" : "deleted"} ${plural(n || 0, "message")} of ${name}'s DLQ`;
      const missing = body && Array.isArray(body.notFound) ? body.notFound : [];
      if (missing.length) showMessage(`${done}; not found (gone, or held by another look): ${missing.join(", ")}`, "error");
      else showMessage(done, "ok");
    } catch (e) {
      showMessage(e.message, "error");
    }
    await browseDlq(name);
    requestRefresh();
  }

  // ---------------------------------------------------------------- workers table
  function createWorkerRow(id) {
    const c = {};
    const td = (field, cls) => (c[field] = el("td", { "data-field": field, class: cls }));
    const tr = el("tr", { "data-worker": id },
      td("id", "mono"), td("host"), td("pid", "num"), td("status"), td("load", "num load"),
      td("heartbeat", "num"), td("started"), td("consumers", "consumers"),
      el("td", { class: "spark" }, (c.spark = chart(120, 24, "spark"))));
    tr._c = c;
    return tr;
  }
  function updateWorkerRow(tr, w) {
    const c = tr._c;
    const s = charts.workers[w.id];
    if (s) drawChart(c.spark, [s.load], "last hour: queues assigned (the peak of each minute) out of " + w.maxLoad, w.maxLoad);
    setText(c.id, w.id);
    setText(c.host, w.host || DASH);
    setText(c.pid, num(w.pid));
    setContent(c.status, w.status, () => [el("span", { class: "badge " + w.status, text: w.status })]);
    setText(c.load, `${w.load}/${w.maxLoad}`);
    const pct = w.maxLoad > 0 ? Math.min(100, Math.round((100 * w.load) / w.maxLoad)) : 0;
    c.load.style.backgroundSize = `${pct}% 3px`;
    c.load.classList.toggle("full", pct >= 100);
    const age = Number(w.heartbeatAgeSeconds);
    setText(c.heartbeat, Number.isFinite(age) ? `${duration(Math.max(0, age))} ago` : DASH);
    c.heartbeat.classList.toggle("warn", !!w.late && !w.gone);
    c.heartbeat.classList.toggle("bad", !!w.gone);
    tr.classList.toggle("late", !!w.late);
    setTitle(c.heartbeat, w.gone ? "no heartbeat for WORKER_TIMEOUT: a master will declare it dead"
      : w.late ? "heartbeat is late (over twice HEARTBEAT_INTERVAL): the worker may be stuck or gone" : "");
    setText(c.started, shortTime(w.startedAt));
    setTitle(c.started, isoTitle(w.startedAt));
    const consumers = Array.isArray(w.consumers) ? w.consumers : [];
    const lines = consumers.map((k) => [
      String(k.pid),
      k.queueName ? k.queueName : "idle",
      `${Number(k.rssMb).toFixed(1)} MB`,
      `${Number(k.cpuPercent).toFixed(1)} %`,
    ].join(" \u00b7 "));
    setContent(c.consumers, JSON.stringify(lines), () => lines.length
      ? lines.map((line) => el("div", { class: "consumer", text: line }))
      : [el("span", { class: "muted", text: "no consumers" })]);
  }
  function renderWorkers(list) {
    syncRows(ui.workers, list, (w) => w.id, createWorkerRow, updateWorkerRow,
      ["no workers \u2014 start some with ", ["orchestrator run --mode W"], " (or MW)"]);
    setText($("workers-count"), list.length ? String(list.length) : "");
  }

  // ---------------------------------------------------------------- jobs table
  function jobsQuery() {
    const q = new URLSearchParams();
    if (ui.jobStatus.value) q.set("status", ui.jobStatus.value);
    const queue = ui.jobQueue.value.trim();
    if (queue) q.set("queue", queue);
    q.set("limit", ui.jobLimit.value || "50");
    return q.toString();
  }
  function createJobRow(id) {
    const c = {};
    const td = (field, cls) => (c[field] = el("td", { "data-field": field, class: cls }));
    const tr = el("tr", { "data-job": id },
      td("id", "mono"), td("queueName"), td("status"), td("messageCount", "num"), td("failedCount", "num"),
      td("worker", "mono"), td("createdAt"), td("endedAt"), td("reason", "reason"));
    tr._c = c;
    return tr;
  }
  function updateJobRow(tr, j) {
    const c = tr._c;
    const p = j.processor || {};
    setText(c.id, j.id);  // whole: it is what `orchestrator jobs show ID` takes
    setTitle(c.id, j.id);
    setText(c.queueName, j.queueName);
    setContent(c.status, j.status, () => [el("span", { class: "badge " + j.status, text: j.status })]);
    setText(c.messageCount, num(j.messageCount));
    setText(c.failedCount, num(j.failedCount));
    c.failedCount.classList.toggle("bad", j.failedCount > 0);
    setText(c.worker, p.workerId || DASH);
    setTitle(c.worker, [p.workerPid ? `worker pid ${p.workerPid}` : "", p.consumerPid ? `consumer pid ${p.consumerPid}` : ""]
      .filter(Boolean).join("\n"));
    setText(c.createdAt, shortTime(j.createdAt));
    setTitle(c.createdAt, isoTitle(j.createdAt));
    setText(c.endedAt, shortTime(j.endedAt));
    const start = parseTime(j.startedAt), end = parseTime(j.endedAt);
    setTitle(c.endedAt, [isoTitle(j.endedAt), start && end ? `ran ${duration((end - start) / 1000)}` : ""]
      .filter(Boolean).join("\n"));
    const reason = j.endReason || "";
    const error = j.error || "";
    setContent(c.reason, JSON.stringify([reason, error]), () => {
      const parts = [];
      if (reason) parts.push(document.createTextNode(reason));
      if (reason && error) parts.push(document.createTextNode(": "));
      if (error) parts.push(el("span", { class: "err", text: error }));
      if (!parts.length) parts.push(document.createTextNode(DASH));
      return parts;
    });
    setTitle(c.reason, [reason, error].filter(Boolean).join("\n"));
  }
  function renderJobs(list) {
    const filtered = ui.jobStatus.value || ui.jobQueue.value.trim();
    syncRows(ui.jobs, list, (j) => j.id, createJobRow, updateJobRow,
      [filtered ? "no jobs match these filters" : "no jobs yet"]);
    setText($("jobs-count"), list.length ? String(list.length) : "");
  }

  // ---------------------------------------------------------------- health
  function renderHealth(h) {
    const leads = !!h.leader;
    setText(ui.leader, leads ? "this master leads" : "standby");
    ui.leader.className = "pill " + (leads ? "lead" : "standby");
    const parts = [];
    if (h.masterId) parts.push(`master ${h.masterId}`);
    parts.push(`MongoDB ${h.mongodb ? "ok" : "unreachable"}`);
    parts.push(`SQS ${h.sqs === null || h.sqs === undefined ? "not checked by a standby" : h.sqs ? "ok" : "failing"}`);
    if (h.status && h.status !== "ok") parts.push(`status ${h.status}`);
    setText(ui.healthDetail, parts.join(" \u00b7 "));
    ui.healthDetail.classList.toggle("bad", !h.mongodb || h.sqs === false || (h.status && h.status !== "ok"));
  }

  // ---------------------------------------------------------------- refresh loop
  let timer = null;
  let refreshing = false;
  let again = false;
  let lastGood = null;

  /** Refresh now; if one is running, run another right after it (never two at once). */
  function requestRefresh() {
    if (refreshing) { again = true; return; }
    clearTimeout(timer);
    refresh();
  }

  // ---------------------------------------------------------------- chart data
  const CHART_EVERY_MS = 5000;  // points are minutes: the current one grows between looks
  const charts = { queues: {}, workers: {}, at: 0 };
  const perSecond = (counts) => counts.map((n) => n / 60);
  let workers = [], workerIds = [];  // the last list shown: redrawn when the charts arrive
  async function refreshCharts(force) {
    if (!force && performance.now() - charts.at < CHART_EVERY_MS) return;
    charts.at = performance.now();
    const q = new URLSearchParams();
    for (const x of queues) q.append("queue", x.name);
    for (const id of workerIds) q.append("worker", id);
    if (![...q.keys()].length) return;
    try {
      const s = await getJSON("/api/series?" + q.toString());
      charts.queues = s.queues || {};
      charts.workers = s.workers || {};
      renderQueues();
      renderWorkers(workers);
      if (openedQueue) drawQueuePage();
    } catch (e) {
      console.error(e);
    }
  }

  // ---------------------------------------------------------------- a queue's own page
  let openedQueue = null;
  function openQueue(name) {
    openedQueue = name;
    ui.queuePage.hidden = false;
    setText(ui.queuePageName, name);
    drawQueuePage();
    refreshCharts(true);
  }
  function drawQueuePage() {
    const s = charts.queues[openedQueue];
    if (!s) return;
    drawChart(ui.queueChart, [perSecond(s.handled), s.depth],
      `${openedQueue}, last hour: messages handled per second (line) and depth (dashed)`);
    const last = perSecond(s.handled).slice(-1)[0];
    const depth = s.depth.slice(-1)[0];
    setText(ui.queuePageNow, `now: ${last.toFixed(2)} handled/s, depth ${depth === null ? DASH : depth}`);
  }

  // ---------------------------------------------------------------- queue pages
  const QUEUE_PAGE = 100;  // queues a page shows: a page reads only its own queues' counts
  const pages = [];        // the first name of each page before this one (null: from the start)
  let pageAfter = null;    // the name this page starts after
  const queuesPath = () => `/api/queues?limit=${QUEUE_PAGE}` +
    (pageAfter === null ? "" : "&after=" + encodeURIComponent(pageAfter));
  function renderPager() {
    ui.prevPage.disabled = pages.length === 0;
    ui.nextPage.disabled = queues.length < QUEUE_PAGE;
    setText(ui.pageInfo, pages.length || queues.length >= QUEUE_PAGE
      ? `page ${pages.length + 1}` : "");
  }
  function turnPage(forward) {
    if (forward && queues.length) { pages.push(pageAfter); pageAfter = queues[queues.length - 1].name; }
    else if (!forward && pages.length) pageAfter = pages.pop();
    else return;
    requestRefresh();
  }

  async function refresh() {
    refreshing = true;
    clearTimeout(timer);
    timer = null;
    const jq = jobsQuery();
    const errors = [];
    try {
      const paths = ["/health", queuesPath(), "/api/workers", "/api/jobs?" + jq];
      const [h, q, w, j] = await Promise.allSettled([
        getJSON(paths[0], (b) => b && typeof b === "object" && "leader" in b),
        getJSON(paths[1]), getJSON(paths[2]), getJSON(paths[3]),
      ]);
      const t = performance.now();
      [h, q, w, j].forEach((r, i) => { if (r.status === "rejected") errors.push([paths[i], r.reason]); });
      if (h.status === "fulfilled" && h.value) renderHealth(h.value);
      if (q.status === "fulfilled" && Array.isArray(q.value)) {
        takeQueueSample(q.value, t);
        queues = q.value;
        renderQueues();
        renderPager();
      }
      if (w.status === "fulfilled" && Array.isArray(w.value)) {
        workers = w.value;
        workerIds = workers.map((x) => x.id);
        renderWorkers(workers);
      }
      refreshCharts(false);
      // Filters changed while this was in flight: a fresh refresh follows, don't show stale jobs.
      if (j.status === "fulfilled" && Array.isArray(j.value) && jq === jobsQuery()) renderJobs(j.value);
    } catch (e) {
      errors.push(["render", e]);
      console.error(e);
    } finally {
      showRefreshStatus(errors);
      refreshing = false;
      if (again) { again = false; refresh(); } else timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  function showRefreshStatus(errors) {
    const now = new Date();
    if (!errors.length) {
      lastGood = now;
      setText(ui.status, `updated ${hms(now)}`);
      ui.status.className = "";
      ui.main.classList.remove("stale");
      return;
    }
    const net = errors.find(([, e]) => e && e.network);
    const msg = (e) => {
      const m = (e && e.message) || String(e);
      return e && e.status ? `${e.status} ${m}` : m;
    };
    const distinct = [...new Set(errors.map(([, e]) => msg(e)))];
    let text = net
      ? `API unreachable: ${msg(net[1])}`
      : "API error: " + (distinct.length === 1
        ? distinct[0]
        : errors.map(([p, e]) => `${p.split("?")[0]}: ${msg(e)}`).join("; "));
    text += lastGood ? ` \u2014 retrying; showing data from ${hms(lastGood)}` : " \u2014 retrying";
    setText(ui.status, text);
    ui.status.className = "error";
    ui.main.classList.toggle("stale", !!lastGood);
  }

  ui.prevPage.addEventListener("click", () => turnPage(false));
  ui.dlqAll.addEventListener("change", () => {
    selected.clear();
    if (ui.dlqAll.checked) for (const d of deadLetters) selected.add(d.messageId);
    renderDeadLetters();
  });
  ui.dlqRedrive.addEventListener("click", () => actOnDeadLetters("redrive", [...selected]));
  ui.dlqDelete.addEventListener("click", () => actOnDeadLetters("delete", [...selected]));
  $("dlq-reload").addEventListener("click", () => browsing && browseDlq(browsing));
  $("dlq-close").addEventListener("click", () => { browsing = null; ui.dlqBrowser.hidden = true; });
  ui.queueChart = chart(640, 160, "big");
  $("queue-chart").appendChild(ui.queueChart);
  $("queue-page-close").addEventListener("click", () => { openedQueue = null; ui.queuePage.hidden = true; });

  ui.nextPage.addEventListener("click", () => turnPage(true));

  ui.jobStatus.addEventListener("change", requestRefresh);
  ui.jobLimit.addEventListener("change", requestRefresh);
  ui.jobQueue.addEventListener("input", requestRefresh);

  refresh();
})();
