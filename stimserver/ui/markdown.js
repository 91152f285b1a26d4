// A small Markdown renderer that builds DOM nodes and never parses HTML: raw HTML in the
// source stays visible text, links are made only for http(s) URLs (anything else, e.g.
// javascript:, stays text), and images are shown as links, never loaded. Safe by
// construction: the only sinks used are createElement, textContent/text nodes, and
// setAttribute("href") with a URL checked to start with http:// or https://.
import { h } from "./dom.js";

const SAFE_URL = /^https?:\/\/[^\s<>"]+$/i;

export function safeUrl(url) {
  return SAFE_URL.test(url) ? url : null;
}

function link(text, url) {
  const href = safeUrl(url);
  if (!href) return null;
  return h("a", { href, rel: "noopener noreferrer nofollow", target: "_blank" }, text);
}

// Inline spans: `code`, **strong**, *em*/_em_, [text](url), ![alt](url), <http://autolink>.
// Underscores only delimit at word edges (snake_case and __dunder__ names inside words stay text).
const INLINE_SOURCE = /`([^`]+)`|\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)__(?=\S)([^_]+?)(?<=\S)__(?!\w)|\*(?=[^\s*])([^*]+?)(?<=\S)\*|(?<!\w)_(?=\S)([^_]+?)(?<=\S)_(?!\w)|(!?)\[([^\]]*)\]\(([^)\s]*)\)|<(https?:\/\/[^>\s]+)>/g;

export function inline(text) {
  const out = [];
  let at = 0;
  const spans = new RegExp(INLINE_SOURCE.source, "g"); // one per call: spans nest (recursion)
  for (let m = spans.exec(text); m; m = spans.exec(text)) {
    let node = null;
    if (m[1] !== undefined) node = h("code", {}, m[1]);
    else if (m[2] !== undefined || m[3] !== undefined) node = h("strong", {}, inline(m[2] ?? m[3]));
    else if (m[4] !== undefined || m[5] !== undefined) node = h("em", {}, inline(m[4] ?? m[5]));
    else if (m[7] !== undefined) node = link(m[6] ? `image: ${m[7] || m[8]}` : inline(m[7]), m[8]);
    else if (m[9] !== undefined) node = link(m[9], m[9]);
    if (node === null) continue; // not a safe link: left as the text it is
    out.push(text.slice(at, m.index), node);
    at = m.index + m[0].length;
  }
  out.push(text.slice(at));
  return out;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

export function renderMarkdown(source) {
  const root = h("div", { class: "md" });
  blocks(String(source ?? "").replace(/\r\n?/g, "\n").split("\n"), root);
  return root;
}

function blocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i++; continue; }
    let m = FENCE.exec(line);
    if (m) {
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence)) body.push(lines[i++]);
      i++;
      parent.append(h("pre", { class: "code", dataset: m[2] ? { lang: m[2] } : {} }, h("code", {}, body.join("\n"))));
      continue;
    }
    if ((m = HEADING.exec(line))) {
      parent.append(h("h" + Math.min(6, m[1].length + 2), {}, inline(m[2])));
      i++;
      continue;
    }
    if (RULE.test(line)) { parent.append(h("hr")); i++; continue; }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].replace(QUOTE, ""));
      const quote = h("blockquote");
      blocks(body, quote);
      parent.append(quote);
      continue;
    }
    if ((m = ITEM.exec(line))) {
      i = list(lines, i, m[1].length, /\d/.test(m[2]), parent);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !HEADING.test(lines[i])
           && !QUOTE.test(lines[i]) && !(ITEM.test(lines[i]) && para.length === 0)) {
      if (ITEM.test(lines[i])) break;
      para.push(lines[i++].trim());
    }
    const p = h("p");
    para.forEach((text, k) => { if (k) p.append(h("br")); p.append(...inline(text).map(toNode)); });
    parent.append(p);
  }
}

function list(lines, i, indent, ordered, parent) {
  const el = h(ordered ? "ol" : "ul");
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    i++;
    while (i < lines.length) {
      const next = lines[i];
      const sub = ITEM.exec(next);
      if (sub && sub[1].length <= indent) break;
      if (!next.trim() && !(lines[i + 1] || "").startsWith(" ".repeat(indent + 2))) break;
      if (!sub && next.trim() && !/^\s/.test(next)) break;
      body.push(next.slice(Math.min(indent + 2, next.length - next.trimStart().length)));
      i++;
    }
    const li = h("li");
    blocks(body, li);
    if (li.childNodes.length === 1 && li.firstChild.tagName === "P") li.replaceChildren(...li.firstChild.childNodes);
    el.append(li);
  }
  parent.append(el);
  return i;
}

function toNode(x) {
  return x instanceof Node ? x : document.createTextNode(String(x));
}
