// ratchet dashboard: the run page's live chart, slots, decisions and review controls.
// Every piece of journal text reaches the page through textContent, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MAX_DRAWN = 4000; // points drawn besides the keeps: a long run is thinned, not slowed

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function fmt(v) {
  return v === null || v === undefined ? "-" : String(Number(Number(v).toPrecision(6)));
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

// review controls: the same governance call as `ratchet review approve|reject`
async function review(box, id, approve) {
  const note = box.querySelector(".note").value;
  const result = box.querySelector(".result");
  result.textContent = "…";
  try {
    const done = await api(`/api/experiments/${id}/${approve ? "approve" : "reject"}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ note }),
    });
    result.textContent = `${done.verdict} by ${done.who}`;
    box.dataset.state = done.verdict;
    const state = document.getElementById("review-state");
    if (state) state.textContent = done.verdict + (done.note ? `: ${done.note}` : "");
  } catch (error) {
    result.textContent = `failed: ${error.message}`;
  }
}

function wireReview(box) {
  const id = box.dataset.experiment;
  box.querySelector(".approve").addEventListener("click", () => review(box, id, true));
  box.querySelector(".reject").addEventListener("click", () => review(box, id, false));
}

function reviewBox(keep) {
  const box = el("div", null, "review");
  box.dataset.experiment = keep.id;
  box.dataset.state = keep.review.state;
  const link = el("a", `#${keep.id}`);
  link.href = `/experiments/${keep.id}`;
  box.append(link, el("span", ` ${fmt(keep.value)} `), el("span", keep.rationale, "rationale"),
    el("span", ` [${keep.review.state}] `, "state"));
  const note = el("input", null, "note");
  note.type = "text";
  note.placeholder = "note (why)";
  note.maxLength = 2000;
  box.append(note, el("button", "approve", "approve"), el("button", "reject", "reject"),
    el("span", "", "result"));
  for (const b of box.querySelectorAll("button")) b.type = "button";
  wireReview(box);
  return box;
}

class RunPage {
  constructor(root) {
    this.root = root;
    this.run = root.dataset.run;
    this.goal = root.dataset.goal;
    this.points = [];
    this.last = 0;
    this.seen = new Set();
    this.chart = document.getElementById("chart");
    this.recent = document.querySelector("#recent tbody");
    this.summary = null;
  }

  base() {
    return `/api/runs/${encodeURIComponent(this.run)}`;
  }

  async start() {
    for (;;) { // every point so far, page by page
      const page = await api(`${this.base()}/points?after=${this.last}&limit=2000`);
      this.categories = page.categories;
      for (const row of page.points) this.points.push(this.point(row));
      this.last = page.last;
      if (page.points.length < 2000) break;
    }
    const rows = await api(`${this.base()}/experiments?limit=15`);
    for (const row of rows.experiments.slice().reverse()) if (row.decision) this.addRow(row);
    this.draw();
    this.loadKeeps();
    this.listen();
    setInterval(() => this.drawSlots(), 500);
  }

  listen() {
    const live = document.getElementById("live");
    const source = new EventSource(`${this.base()}/events?after=${this.last}`);
    source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
    source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live"; });
    source.addEventListener("update", (event) => this.update(JSON.parse(event.data)));
  }

  point(row) { // [id, decision, value, baseline] as the API sends it
    const [id, decision, value, baseline] = row;
    return { id, decision, value, baseline: Boolean(baseline), category: this.categories[decision] };
  }

  async update(message) {
    const fresh = message.points.map((row) => this.point(row)).filter((p) => p.id > this.last);
    if (fresh.length) {
      this.points.push(...fresh);
      this.last = message.last;
      const ids = fresh.map((p) => p.id);
      const rows = await api(`${this.base()}/experiments?limit=${Math.min(50, ids.length + 5)}`);
      for (const row of rows.experiments.slice().reverse()) if (row.decision) this.addRow(row);
      if (fresh.some((p) => p.decision === "keep")) this.loadKeeps();
      this.draw();
    }
    this.summary = message.summary;
    this.clockOffset = Date.now() / 1000 - message.summary.now;
    this.drawCounts();
    this.drawSlots();
  }

  addRow(row) {
    if (this.seen.has(row.id)) return;
    this.seen.add(row.id);
    const tr = el("tr", null, `cat-${(row.category || "flight").replace(/ /g, "-")}`);
    tr.dataset.experiment = row.id;
    const link = el("a", row.id);
    link.href = `/experiments/${row.id}`;
    const first = el("td");
    first.append(link);
    tr.append(first, el("td", row.decision), el("td", fmt(row.value)), el("td", row.why, "why"));
    this.recent.prepend(tr);
    while (this.recent.children.length > 15) this.recent.lastElementChild.remove();
  }

  drawCounts() {
    const s = this.summary;
    const set = (id, v) => { document.getElementById(id).textContent = v; };
    set("count-baseline", s.baseline ? fmt(s.baseline.value) : "-");
    set("count-best", s.best ? fmt(s.best.value) : "-");
    set("count-experiments", s.experiments);
    set("count-keeps", s.keeps);
    set("count-since", s.since_keep);
    set("count-cost", Number(s.cost_usd).toFixed(2));
  }

  drawSlots() {
    const box = document.getElementById("slots");
    if (!this.summary) return;
    const flights = this.summary.in_flight;
    box.replaceChildren();
    if (!flights.length) { box.append(el("p", "nothing in flight", "muted")); return; }
    const now = Date.now() / 1000 - (this.clockOffset || 0);
    for (const f of flights) {
      const line = el("div", null, "slot");
      const elapsed = Math.max(0, now - f.since);
      const label = el("span", `slot ${f.slot}: #${f.id} ${f.stage} (${f.proposer}) `);
      const bar = el("span", null, "bar");
      const fill = el("span", null, "fill");
      const share = f.budget ? Math.min(1, elapsed / f.budget) : 0;
      fill.style.width = `${(share * 100).toFixed(1)}%`;
      bar.append(fill);
      const budget = f.budget ? ` / ${f.budget}s budget` : "";
      line.append(label, bar, el("span", ` ${elapsed.toFixed(1)}s${budget}`));
      box.append(line);
    }
  }

  async loadKeeps() {
    const box = document.getElementById("keeps");
    const found = await api(`${this.base()}/keeps`);
    box.replaceChildren();
    if (!found.keeps.length) box.append(el("p", "no keep after the baseline yet", "muted"));
    for (const keep of found.keeps) box.append(reviewBox(keep));
  }

  draw() {
    const W = 900, H = 380, L = 70, R = 20, T = 20, B = 40;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot" });
    const measured = this.points.map((p, i) => [i, p]).filter(([, p]) => p.value !== null);
    if (!measured.length) {
      const text = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
      text.textContent = "no experiment decided yet";
      root.append(text);
      this.chart.replaceChildren(root);
      return;
    }
    const values = measured.map(([, p]) => p.value);
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi === lo) { lo -= 1; hi += 1; }
    const n = Math.max(1, this.points.length - 1);
    const x = (i) => L + (i / n) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    root.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      const t = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" });
      t.textContent = fmt(v);
      root.append(t);
    }
    const xl = svg("text", { x: (W + L) / 2, y: H - 8, "text-anchor": "middle", class: "tick" });
    xl.textContent = `experiment (${this.points.length} decided)`;
    root.append(xl);
    const others = measured.filter(([, p]) => p.category !== "kept");
    const step = Math.max(1, Math.ceil(others.length / MAX_DRAWN));
    others.forEach(([i, p], k) => {
      if (k % step === 0) root.append(svg("circle", { cx: x(i), cy: y(p.value), r: 3, class: "dot other" }));
    });
    this.points.forEach((p, i) => {
      if (p.value === null && p.category === "failed to measure") {
        const mark = svg("text", { x: x(i) - 3, y: H - B - 4, class: "fail" });
        mark.textContent = "×";
        root.append(mark);
      }
    });
    const kept = measured.filter(([, p]) => p.category === "kept");
    if (kept.length) {
      let path = "";
      kept.forEach(([i, p], k) => {
        path += k === 0 ? `M${x(i)},${y(p.value)}` : ` H${x(i)} V${y(p.value)}`;
      });
      path += ` H${x(this.points.length - 1)}`;
      root.append(svg("path", { d: path, class: "best" }));
      const baseline = kept.find(([, p]) => p.baseline);
      if (baseline) {
        root.append(svg("line", { x1: L, x2: W - R, y1: y(baseline[1].value), y2: y(baseline[1].value), class: "baseline" }));
      }
      for (const [i, p] of kept) {
        const dot = svg("circle", { cx: x(i), cy: y(p.value), r: 6, class: "dot kept" });
        const title = svg("title");
        title.textContent = `#${p.id} ${fmt(p.value)}`;
        dot.append(title);
        root.append(dot);
      }
    }
    this.chart.replaceChildren(root);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const run = document.getElementById("run-page");
  if (run) {
    const page = new RunPage(run);
    window.ratchetRunPage = page;
    page.start().catch((error) => {
      document.getElementById("live").textContent = `error: ${error.message}`;
    });
  }
  for (const box of document.querySelectorAll("#experiment-page .review")) wireReview(box);
});
