// The server's own OpenAPI document rendered as plain HTML: one section per operation (method, path, summary,
// parameters, request body types, responses), so /docs works offline (no CDN, no framework).
"use strict";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function schemaName(s) {
  if (!s) return "";
  if (s.$ref) return s.$ref.split("/").pop();
  if (s.type === "array") return `array of ${schemaName(s.items)}`;
  return s.type || (s.anyOf || []).map(schemaName).join(" | ");
}

function render(spec) {
  const ops = document.getElementById("operations");
  let n = 0;
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      const m = method.toUpperCase();
      const sec = el("section", {class: "op", "data-op": `${m} ${path}`},
                     el("h2", {}, el("span", {class: `method ${m}`}, m), path));
      if (op.summary || op.description) sec.append(el("p", {}, op.summary || op.description));
      const params = op.parameters || [];
      if (params.length) {
        const t = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"),
                                     el("th", {}, "type"), el("th", {}, "required")));
        for (const p of params) {
          t.append(el("tr", {}, el("td", {}, p.name), el("td", {}, p.in), el("td", {}, schemaName(p.schema)),
                      el("td", {}, p.required ? "yes" : "no")));
        }
        sec.append(t);
      }
      if (op.requestBody) sec.append(el("p", {}, "body: " + Object.keys(op.requestBody.content || {}).join(", ")));
      const rs = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "response")));
      for (const [code, r] of Object.entries(op.responses || {})) {
        const js = ((r.content || {})["application/json"] || {}).schema;
        rs.append(el("tr", {}, el("td", {}, code), el("td", {}, [r.description || "", schemaName(js)]
                                                              .filter(Boolean).join(" — "))));
      }
      sec.append(rs);
      ops.append(sec);
      n += 1;
    }
  }
  document.getElementById("docs-status").textContent = `${spec.info.title} ${spec.info.version}: ${n} operations`;
  document.body.dataset.operations = String(n);
}

fetch("/openapi.json").then((r) => r.json()).then(render).catch((e) => {
  document.getElementById("docs-status").textContent = `could not read /openapi.json: ${e}`;
});
