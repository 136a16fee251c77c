// The pdp playground page: edits held here until Save, every change validated by the server.
"use strict";

const state = {
  files: {}, // relative name -> text as edited
  saved: {}, // relative name -> text on disk
  diagnostics: [],
  validation: 0, // the number of the latest validation asked for: older answers are dropped
};

const $ = (id) => document.getElementById(id);

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

function setStatus(text) {
  $("status").textContent = text;
}

// ---- editors -------------------------------------------------------------------------------

const editors = {
  policy: { textarea: "policy", select: "policy-file", gutter: "policy-gutter", suffix: ".pdp" },
  tuples: { textarea: "tuples", select: "tuples-file", gutter: "tuples-gutter", suffix: ".jsonl" },
};

function fillEditor(kind) {
  const e = editors[kind];
  const select = $(e.select);
  select.replaceChildren();
  for (const name of Object.keys(state.files).sort()) {
    if (name.endsWith(e.suffix)) select.append(el("option", { value: name }, name));
  }
  showFile(kind);
}

function showFile(kind) {
  const e = editors[kind];
  const name = $(e.select).value;
  $(e.textarea).value = name ? state.files[name] : "";
  $(e.textarea).disabled = !name;
  drawGutter(kind);
}

function drawGutter(kind) {
  const e = editors[kind];
  const name = $(e.select).value;
  const lines = $(e.textarea).value.split("\n").length;
  const marked = new Map();
  for (const d of state.diagnostics) {
    if (d.file === name && d.line > 0) marked.set(d.line, d);
  }
  const gutter = $(e.gutter);
  gutter.replaceChildren();
  for (let i = 1; i <= lines; i++) {
    const d = marked.get(i);
    gutter.append(
      el("div", d ? { class: `mark ${d.severity}`, title: d.message } : {}, String(i)),
    );
  }
  gutter.scrollTop = $(e.textarea).scrollTop;
}

function edited(kind) {
  const e = editors[kind];
  const name = $(e.select).value;
  if (!name) return;
  state.files[name] = $(e.textarea).value;
  drawGutter(kind);
  showDirty();
  scheduleValidation();
}

function dirtyFiles() {
  return Object.keys(state.files).filter((name) => state.files[name] !== state.saved[name]);
}

function showDirty() {
  const dirty = dirtyFiles();
  $("save").disabled = dirty.length === 0;
  setStatus(dirty.length ? `unsaved: ${dirty.join(", ")}` : "saved");
}

function drafts() {
  const out = {};
  for (const name of dirtyFiles()) out[name] = state.files[name];
  return out;
}

// ---- validation ----------------------------------------------------------------------------

let timer = null;

function scheduleValidation() {
  clearTimeout(timer);
  timer = setTimeout(validate, 200);
}

async function validate() {
  const number = ++state.validation;
  $("errors").setAttribute("aria-busy", "true");
  try {
    const result = await post("/api/validate", { files: drafts() });
    if (number !== state.validation) return; // a newer edit is being validated
    showDiagnostics(result.diagnostics);
  } catch (err) {
    if (number === state.validation) showDiagnostics([{ text: `validation failed: ${err.message}`, severity: "error" }]);
  } finally {
    if (number === state.validation) $("errors").removeAttribute("aria-busy");
  }
}

function showDiagnostics(diagnostics) {
  state.diagnostics = diagnostics;
  const list = $("errors");
  list.replaceChildren();
  const errors = diagnostics.filter((d) => d.severity === "error");
  list.className = errors.length ? "failing" : "ok";
  list.dataset.count = String(errors.length);
  for (const d of diagnostics) {
    const item = el(
      "li",
      { class: d.severity, "data-file": d.file || "", "data-line": String(d.line || 0) },
      d.text,
      d.hint ? el("div", { class: "hint" }, `hint: ${d.hint}`) : null,
    );
    item.addEventListener("click", () => reveal(d));
    list.append(item);
  }
  drawGutter("policy");
  drawGutter("tuples");
}

function reveal(d) {
  for (const kind of Object.keys(editors)) {
    const e = editors[kind];
    if (d.file && d.file.endsWith(e.suffix) && d.file in state.files) {
      $(e.select).value = d.file;
      showFile(kind);
      const textarea = $(e.textarea);
      const lines = textarea.value.split("\n");
      let offset = 0;
      for (let i = 0; i < d.line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
      offset += Math.max(0, d.col - 1);
      textarea.focus();
      textarea.setSelectionRange(offset, offset + Math.max(1, (d.end_col || d.col + 1) - d.col));
    }
  }
}

// ---- requests and their trace ----------------------------------------------------------------

async function run() {
  let request;
  try {
    request = JSON.parse($("request").value);
  } catch (err) {
    showDecision({ decision: "DENY", reason: "the request is not JSON", errors: [err.message] });
    return;
  }
  try {
    showDecision(await post("/api/check", { files: drafts(), request }));
  } catch (err) {
    showDecision({ decision: "DENY", reason: "the request failed", errors: [err.message] });
  }
}

function showDecision(d) {
  const box = $("decision");
  box.className = d.decision === "ALLOW" ? "allow" : "deny";
  box.replaceChildren(
    el("strong", { class: "effect" }, d.decision),
    ` ${d.reason || ""}`,
    d.rules && d.rules.length ? el("div", {}, `rules: ${d.rules.join(", ")}`) : null,
    ...(d.errors || []).map((e) => el("div", { class: "error" }, e)),
  );
  drawTrace(d.tree);
}

function drawTrace(tree) {
  const trace = $("trace");
  trace.replaceChildren();
  if (!tree) return;
  const root = el("li", { class: `node root ${tree.decision.toLowerCase()}` },
    el("span", { class: "label" }, `${tree.decision} (${tree.reason}): ${tree.request}`));
  const children = el("ul");
  for (const node of tree.children) children.append(traceNode(node));
  root.append(children);
  trace.append(el("ul", { class: "tree" }, root));
}

function traceNode(node) {
  const item = el(
    "li",
    { class: `node ${node.kind} ${node.outcome}`, "data-kind": node.kind },
    el("span", { class: "kind" }, node.kind),
    el("span", { class: "label" }, node.id),
    el("span", { class: "outcome" }, node.outcome),
    node.detail ? el("div", { class: "detail" }, node.detail) : null,
    node.values && node.values.length
      ? el("div", { class: "values" }, node.values.map((v) => `${v.expr} = ${v.value}`).join(", "))
      : null,
  );
  if (node.hops) {
    // The relation path drawn as a chain of boxes: the subject first, the resource last.
    const chain = el("ol", { class: "hops" });
    node.hops.forEach((hop, i) => {
      chain.append(
        el("li", { class: "hop", "data-hop": String(i) },
          el("span", { class: "hop-id" }, hop.id),
          el("span", { class: "hop-detail" }, hop.detail)),
      );
    });
    item.append(chain);
  }
  if (node.children && node.children.length) {
    const below = el("ul");
    for (const child of node.children) below.append(traceNode(child));
    item.append(below);
  }
  return item;
}

// ---- tests and saving ------------------------------------------------------------------------

async function runTests() {
  const box = $("tests");
  box.replaceChildren(el("p", {}, "running..."));
  box.removeAttribute("data-passed");
  let report;
  try {
    report = await post("/api/tests", { files: drafts() });
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, err.message));
    return;
  }
  const list = el("ul");
  for (const r of report.results) {
    list.append(
      el("li", { class: r.passed ? "pass" : "fail" },
        `${r.passed ? "ok  " : "FAIL"} ${r.name}`,
        r.message ? el("div", { class: "detail" }, r.message) : null),
    );
  }
  const summary = el("p", { class: "summary" }, `${report.passed} passed, ${report.failed} failed`);
  box.replaceChildren(summary, ...(report.errors || []).map((e) => el("p", { class: "error" }, e)), list);
  box.dataset.passed = String(report.passed);
  box.dataset.failed = String(report.failed);
}

async function save() {
  try {
    const result = await post("/api/save", { files: drafts() });
    for (const name of Object.keys(state.files)) state.saved[name] = state.files[name];
    showDirty();
    setStatus(result.written.length ? `saved ${result.written.join(", ")}` : "nothing to save");
    showDiagnostics(result.diagnostics);
  } catch (err) {
    setStatus(`save failed: ${err.message}`);
  }
}

async function start() {
  const response = await fetch("/api/bundle");
  const bundle = await response.json();
  $("bundle-name").textContent = bundle.bundle;
  state.files = { ...bundle.files };
  state.saved = { ...bundle.files };
  fillEditor("policy");
  fillEditor("tuples");
  $("request").value = JSON.stringify(bundle.request, null, 2);
  for (const kind of Object.keys(editors)) {
    const e = editors[kind];
    $(e.textarea).addEventListener("input", () => edited(kind));
    $(e.textarea).addEventListener("scroll", () => { $(e.gutter).scrollTop = $(e.textarea).scrollTop; });
    $(e.select).addEventListener("change", () => showFile(kind));
  }
  $("run").addEventListener("click", run);
  $("run-tests").addEventListener("click", runTests);
  $("save").addEventListener("click", save);
  showDirty();
  await validate();
  document.body.dataset.ready = "true";
}

start();
