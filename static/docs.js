"use strict";
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
// Inline `code` only: the spec's descriptions are short Markdown.
const md = (s) => esc(s).replace(/`([^`]+)`/g, "<code>$1</code>");
const refName = (r) => r.split("/").pop();

function typeOf(s) {
  if (!s) return "";
  if (s.$ref) return `<a href="#schema-${esc(refName(s.$ref))}">${esc(refName(s.$ref))}</a>`;
  if (s.oneOf || s.anyOf) return (s.oneOf || s.anyOf).map(typeOf).join(" | ");
  if (s.allOf) return s.allOf.map(typeOf).join(" & ");
  let t = Array.isArray(s.type) ? s.type.join(" | ") : (s.type || "any");
  if (s.items) t = `array of ${typeOf(s.items)}`;
  if (s.prefixItems) t = `[${s.prefixItems.map(typeOf).join(", ")}]`;
  if (s.additionalProperties && typeof s.additionalProperties === "object") t = `map of ${typeOf(s.additionalProperties)}`;
  if (s.format) t += ` (${esc(s.format)})`;
  if (s.enum) t += ` one of ${s.enum.map((e) => `<code>${esc(e)}</code>`).join(", ")}`;
  return t;
}

function params(op) {
  const ps = op.parameters || [];
  if (!ps.length) return "";
  const rows = ps.map((p) => `<tr><td><code>${esc(p.name)}</code>${p.required ? " *" : ""}</td><td>${esc(p.in)}</td><td>${typeOf(p.schema)}</td><td>${md(p.description)}</td></tr>`);
  return `<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr>${rows.join("")}</table>`;
}

function requestBody(op) {
  const rb = op.requestBody;
  if (!rb) return "";
  const rows = Object.entries(rb.content || {}).map(([ct, c]) => `<tr><td><code>${esc(ct)}</code></td><td>${typeOf(c.schema)}</td></tr>`);
  return `<h4>Request body</h4>${rb.description ? `<p>${md(rb.description)}</p>` : ""}<table><tr><th>content type</th><th>schema</th></tr>${rows.join("")}</table>`;
}

function responses(op) {
  const rows = Object.entries(op.responses || {}).map(([code, r]) => {
    const content = Object.entries(r.content || {}).map(([ct, c]) => `<code>${esc(ct)}</code> ${typeOf(c.schema)}`).join("<br>");
    return `<tr><td class="s${esc(code[0])}">${esc(code)}</td><td>${md(r.description)}</td><td>${content}</td></tr>`;
  });
  return `<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>body</th></tr>${rows.join("")}</table>`;
}

function render(spec) {
  document.getElementById("title").textContent = `${spec.info.title} ${spec.info.version || ""}`;
  document.getElementById("desc").innerHTML = md(spec.info.description) + ` — raw spec: <a href="openapi.json">openapi.json</a>`;
  const byTag = new Map((spec.tags || []).map((t) => [t.name, { desc: t.description, ops: [] }]));
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, { desc: "", ops: [] });
      byTag.get(tag).ops.push({ path, method, op });
    }
  }
  let html = "";
  for (const [tag, { desc, ops }] of byTag) {
    if (!ops.length) continue;
    html += `<h2>${esc(tag)}</h2>${desc ? `<p>${md(desc)}</p>` : ""}`;
    for (const { path, method, op } of ops) {
      // Doc comments start with "`GET /path`: "; the row already shows method and path.
      const summary = (op.summary || (op.description || "").split("\n")[0]).replace(/^`[A-Z]+ [^`]+`:\s*/, "");
      html += `<details class="op" id="${esc(method + path)}"><summary><span class="m ${esc(method)}">${esc(method)}</span><span class="path">${esc(path)}</span><span class="sum">${md(summary)}</span></summary><div class="body">`;
      if (op.description && op.description !== summary) html += `<p>${md(op.description)}</p>`;
      html += params(op) + requestBody(op) + responses(op) + "</div></details>";
    }
  }
  document.getElementById("ops").innerHTML = html;
  // Deep links: #post/v1/segment opens that operation, #all opens every one.
  const target = decodeURIComponent(location.hash.slice(1));
  for (const d of document.querySelectorAll("details.op")) {
    if (target === "all" || d.id === target) d.open = true;
  }
  const schemas = (spec.components && spec.components.schemas) || {};
  document.getElementById("schemas").innerHTML = Object.entries(schemas).map(([name, s]) => {
    const req = new Set(s.required || []);
    const props = Object.entries(s.properties || {}).map(([p, ps]) => `<tr><td><code>${esc(p)}</code>${req.has(p) ? " *" : ""}</td><td>${typeOf(ps)}</td><td>${md(ps.description)}</td></tr>`);
    const body = props.length ? `<table><tr><th>field</th><th>type</th><th>description</th></tr>${props.join("")}</table>` : `<p>${typeOf(s)}</p>`;
    return `<h3 id="schema-${esc(name)}">${esc(name)}</h3>${s.description ? `<p>${md(s.description)}</p>` : ""}${body}`;
  }).join("");
}

fetch("openapi.json")
  .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
  .then(render)
  .catch((e) => { document.getElementById("desc").innerHTML = `<span class="err">Could not load openapi.json: ${esc(e.message)}</span>`; });
// No inline handlers: the page is served under a CSP without 'unsafe-inline'.
document.getElementById("expand-all").addEventListener("click", () => setTimeout(() => location.reload()));
