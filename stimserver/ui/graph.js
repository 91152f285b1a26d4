// A bake's lineage as a small layered graph in SVG: prompts → targets → bakes → child bakes,
// left to right, each node a link to its page. The recipe's edges point from a dependent to
// what it depends on ([src_type, src, dst_type, dst]); arrows here go the way data flows.
import { svg } from "./dom.js";

const NODE_W = 156;
const NODE_H = 38;
const GAP_X = 46;
const GAP_Y = 12;
const PAD = 8;
const MIN_LAYER = { prompt: 0, target: 1, bake: 2 };
const MAX_LABEL = 20;

function short(name) {
  return name.length > MAX_LABEL ? name.slice(0, MAX_LABEL - 1) + "…" : name;
}

// nodes: Map id → { id, type, name, sub?, href?, nav?, current? }; edges: [[from id, to id]] (data flow)
export function layout(nodes, edges) {
  const deps = new Map([...nodes.keys()].map((id) => [id, []]));
  for (const [from, to] of edges) if (deps.has(to) && nodes.has(from)) deps.get(to).push(from);
  const layer = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return MIN_LAYER[nodes.get(id).type] ?? 0; // a cycle: stop
    visiting.add(id);
    let d = MIN_LAYER[nodes.get(id).type] ?? 0;
    for (const from of deps.get(id)) d = Math.max(d, depth(from) + 1);
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  for (const id of nodes.keys()) depth(id);
  const used = [...new Set(layer.values())].sort((a, b) => a - b); // close the gaps (no prompts: targets first)
  const column = new Map(used.map((l, i) => [l, i]));
  const columns = used.map(() => []);
  for (const id of nodes.keys()) columns[column.get(layer.get(id))].push(id);
  const row = new Map();
  columns.forEach((ids, c) => {
    const key = (id) => {
      const ins = deps.get(id).filter((f) => row.has(f));
      return ins.length ? ins.reduce((a, f) => a + row.get(f), 0) / ins.length : Infinity;
    };
    const keys = new Map(ids.map((id) => [id, c === 0 ? 0 : key(id)]));
    ids.sort((a, b) => (keys.get(a) - keys.get(b)) || nodes.get(a).name.localeCompare(nodes.get(b).name)); // NaN (∞−∞) falls to names
    ids.forEach((id, i) => row.set(id, i));
  });
  const tallest = Math.max(1, ...columns.map((ids) => ids.length));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
  const pos = new Map();
  columns.forEach((ids, c) => {
    const top = (height - (ids.length * NODE_H + (ids.length - 1) * GAP_Y)) / 2;
    ids.forEach((id, i) => pos.set(id, { x: PAD + c * (NODE_W + GAP_X), y: top + i * (NODE_H + GAP_Y) }));
  });
  return { pos, width: PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * GAP_X, height };
}

export function drawGraph(nodes, edges, title) {
  const { pos, width, height } = layout(nodes, edges);
  const root = svg("svg", { class: "lineage-svg", viewBox: `0 0 ${width} ${height}`, width: String(width), height: String(height),
    role: "group", "aria-label": title });
  const lines = svg("g", { class: "edges" });
  for (const [from, to] of edges) {
    const a = pos.get(from);
    const b = pos.get(to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x - 2;
    const y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    lines.append(svg("path", { class: "edge", dataset: { from, to }, d: `M${x1} ${y1} C${mid} ${y1} ${mid} ${y2} ${x2} ${y2}` }),
      svg("path", { class: "arrow", d: `M${x2} ${y2} l-7 -4 v8 z` }));
  }
  root.append(lines);
  for (const [id, n] of nodes) {
    const p = pos.get(id);
    const box = svg("g", { class: `node node-${n.type}${n.current ? " current" : ""}`, dataset: { node: id } },
      svg("title", {}, `${n.type} ${n.name}${n.sub ? ` — ${n.sub}` : ""}`),
      svg("rect", { x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: "5" }),
      svg("text", { class: "name", x: p.x + 8, y: p.y + 16 }, short(n.name)),
      svg("text", { class: "sub", x: p.x + 8, y: p.y + 30 }, n.sub ? `${n.type} · ${n.sub}` : n.type));
    if (n.href && !n.current) {
      const attrs = { href: n.href, class: "nodelink" };
      if (n.nav) attrs["data-nav"] = "";
      root.append(svg("a", attrs, box));
    } else root.append(box);
  }
  return root;
}

// The nodes and edges of a recipe's dependency graph (plus the bakes made from this one).
// links: { prompt(name), target(name), bake(name) } → href; statuses: bake name → status.
export function lineageOf(graph, bake, children, statuses, links) {
  const nodes = new Map();
  const add = (type, name) => {
    const id = `${type}:${name}`;
    if (!nodes.has(id)) {
      const n = { id, type, name, sub: type === "bake" ? statuses[name] || null : null, current: type === "bake" && name === bake };
      const link = links[type] && links[type](name);
      if (link) { n.href = link.href; n.nav = link.nav; }
      nodes.set(id, n);
    }
    return id;
  };
  for (const name of Object.keys(graph.prompts || {})) add("prompt", name);
  for (const name of Object.keys(graph.targets || {})) add("target", name);
  for (const name of Object.keys(graph.bakes || {})) add("bake", name);
  add("bake", bake);
  const edges = [];
  const seen = new Set();
  const edge = (from, to) => { const k = `${from}>${to}`; if (!seen.has(k)) { seen.add(k); edges.push([from, to]); } };
  for (const e of graph.edges || []) {
    if (!Array.isArray(e) || e.length < 4) continue;
    const [st, s, dt, d] = e.map(String);
    if (!(st in MIN_LAYER) || !(dt in MIN_LAYER)) continue;
    edge(add(dt, d), add(st, s)); // dependency → dependent
  }
  for (const child of children) edge(add("bake", bake), add("bake", child));
  return { nodes, edges };
}
