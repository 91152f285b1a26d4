// A job's output (stim or rollout): the virtual list of its lines, the selected line in full
// (teacher and student side by side, the shared prompt prefix once), search, sample, stats and
// live updates. app.js routes here and hands in its navigation and sign-in helpers.
import { ApiError, getJSON, query, targetPath } from "./api.js";
import { fmt, h, highlighted, replace } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { VirtualList } from "./vlist.js";

const ACTIVE = new Set(["pending", "running"]);
const PAGE = 50;

function lastUserIndex(messages) {
  for (let i = messages.length - 1; i >= 0; i--) if (messages[i] && messages[i].role === "user") return i;
  return -1;
}

// The messages before the question (the final user message): the prompt every line shares.
function promptPrefix(side) {
  const messages = (side && Array.isArray(side.messages)) ? side.messages : null;
  if (!messages) return null;
  const q = lastUserIndex(messages);
  return messages.slice(0, q < 0 ? messages.length : q);
}

function contentText(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => (p && typeof p.text === "string") ? p.text : JSON.stringify(p)).join("\n");
  return JSON.stringify(content, null, 2);
}

function messageList(messages, title, shared) {
  const list = h("div", { class: "messages" }, h("h3", {}, title));
  let rest = messages || [];
  if (shared && shared.length && rest.length >= shared.length
      && JSON.stringify(rest.slice(0, shared.length)) === JSON.stringify(shared)) {
    list.append(h("p", { class: "shared-note" },
      `${shared.length} shared prompt message${shared.length === 1 ? "" : "s"} — shown once, under “Shared prompt prefix”`));
    rest = rest.slice(shared.length);
  }
  for (const m of rest) {
    const extra = Object.keys(m || {}).filter((k) => k !== "role" && k !== "content");
    list.append(h("div", { class: `msg role-${String(m && m.role).replace(/[^a-z_]/g, "")}` },
      h("div", { class: "role" }, String(m && m.role)),
      h("div", { class: "content" }, contentText(m && m.content)),
      extra.length ? h("pre", { class: "json" }, JSON.stringify(Object.fromEntries(extra.map((k) => [k, m[k]])), null, 2)) : null));
  }
  return list;
}

function questionOf(rec) {
  if (!rec) return "";
  if (typeof rec.question === "string") return rec.question;
  const u = rec.unconditioned_stimulus && rec.unconditioned_stimulus.messages;
  if (Array.isArray(u)) { const i = lastUserIndex(u); if (i >= 0) return contentText(u[i].content); }
  return typeof rec.stimulus === "string" ? rec.stimulus : "";
}

// Dollars, short and exact enough at any size: $1,234.50, $5.00, $0.0421, $0.000087.
function usd(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  if (v === 0) return "$0";
  const a = Math.abs(v);
  const digits = a >= 1 ? 2 : Math.min(8, Math.max(4, 1 - Math.floor(Math.log10(a))));
  return "$" + v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

// A budget as the target sets it: $5.00, $0.05, $0.0001.
function budgetUsd(v) {
  return "$" + v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 8 });
}

function plural(n, one, many) {
  return `${fmt(n)} ${n === 1 ? one : many}`;
}

// A job that stopped before its cost could pass the target's max_cost_usd (jobs/budget.py's message).
function failedForBudget(job) {
  return job.status === "failed" && /max_cost_usd/.test(String(job.error || ""));
}

const MODES = [
  ["standard", "standard", "every request at the input and output prices"],
  ["cached", "cached", "the shared prompt prefix read from the provider's prompt cache"],
  ["batch", "batch", "through the provider's batch API, at its discount"],
  ["cached_batch", "cached batch", "through the batch API, with the prompt cache"],
];
const COUNTED_BY = { anthropic_count_tokens: "Anthropic's count_tokens", tokenizer: "the model's tokenizer",
  approximation: "an approximation (UTF-8 bytes / 4)" };
const OUTPUT_SOURCE = { max_tokens: "max_tokens", default: "the provider's default max_tokens",
  unbounded: "assumed: no max_tokens is set" };

function fieldValue(rec, path) {
  let v = rec;
  for (const part of path.split(".")) { if (v === null || typeof v !== "object") return undefined; v = v[part]; }
  return v;
}

export function outputView(repo, target, kind, params, { main, navLink, uiPath, needSignIn, failed, setQuery, statusBadge }) {
  const base = `${targetPath(repo, target)}/${kind}`;
  const rollout = kind === "rollout";
  let live = true;
  let timer = 0;
  let job = null;
  let shared = { u: null, c: null };
  let searchRun = null;
  const state = {
    line: params.has("line") ? Math.max(0, parseInt(params.get("line"), 10) || 0) : null,
    tab: params.get("tab") || (params.get("q") ? "search" : "line"),
    q: params.get("q") || "", regex: params.get("regex") === "1", field: params.get("field") || "",
    seed: params.get("seed") || "0",
  };

  // -- the frame -------------------------------------------------------------------------------
  const jobbar = h("div", { class: "jobbar" });
  const exports = h("span", { class: "exports" },
    h("a", { href: `${base}/export?format=raw`, download: "", class: "button" }, "Download JSONL"),
    rollout ? h("a", { href: `${base}/export?format=sft`, download: "", class: "button" }, "SFT rows")
      : h("a", { href: `${base}/export?format=questions`, download: "", class: "button" }, "Questions"));
  const search = h("input", { type: "search", id: "search", placeholder: "Search ( / )", value: state.q, autocomplete: "off" });
  const regex = h("input", { type: "checkbox", id: "regex", checked: state.regex });
  const field = h("select", { id: "field" }, ["", "question", "type", rollout ? "response.content" : "conditioned_stimulus",
    rollout ? "error" : "unconditioned_stimulus"].map((f) => h("option", { value: f }, f || "any field")));
  field.value = state.field;
  const searchForm = h("form", { class: "search", role: "search" }, search,
    h("label", { class: "check" }, regex, " regex"), field, h("button", { type: "submit" }, "Search"));
  const goto = h("input", { type: "number", id: "goto", min: "0", placeholder: "line ( g )", inputmode: "numeric" });
  const gotoForm = h("form", { class: "goto" }, goto, h("button", { type: "submit" }, "Go"));
  const tabs = {};
  const tabBar = h("div", { class: "tabs", role: "tablist" });
  const sidebody = h("div", { class: "sidebody" });
  for (const [name, label] of [["line", "Line"], ["search", "Search"], ["sample", "Sample"], ["stats", "Stats"]]) {
    tabs[name] = h("button", { type: "button", role: "tab", dataset: { tab: name }, onclick: () => showTab(name, true) }, label);
    tabBar.append(tabs[name]);
  }
  const prefix = h("details", { class: "prefix", hidden: true });
  const estimate = rollout ? h("details", { class: "estimate", id: "estimate" },
    h("summary", {}, h("strong", {}, "Estimate"), h("span", { class: "muted" }, " — what this rollout costs, in each mode")))
    : null;
  const list = new VirtualList({
    rowHeight: 28, pageSize: PAGE,
    fetchPage: (offset, limit, signal) => getJSON(`${base}/output${query({ offset, limit })}`, { signal }).then((b) => {
      noteStatus(b);
      return b.output;
    }),
    renderRow: rollout ? rolloutRow : stimRow,
    onSelect: (line) => selectLine(line),
  });
  list.follow = true;
  list.onError = (err) => { if (!needSignIn(err)) showProblem(err); };
  const side = h("aside", { class: "side" }, tabBar, sidebody);
  replace(main,
    h("nav", { class: "crumbs" }, navLink("/ui/", "Repos"), " / ", navLink(uiPath(repo), repo), " / ",
      h("span", {}, target), " / ", h("span", { class: "kind" }, kind),
      h("span", { class: "other" }, " ", navLink(uiPath(repo, target, rollout ? "stim" : "rollout"), rollout ? "stim →" : "rollout →"))),
    h("div", { class: "bar" }, jobbar, exports),
    estimate,
    h("div", { class: "toolbar" }, searchForm, gotoForm,
      h("span", { class: "keys muted" }, `j/k move · / search · g go to line${rollout ? " · e estimate" : ""}`)),
    prefix,
    h("div", { class: "panes" }, list.el, side));

  // -- rows ----------------------------------------------------------------------------------------
  function stimRow(line, rec) {
    if (!rec) return h("div", { class: "pending" }, h("span", { class: "ln" }, fmt(line)), h("span", { class: "muted" }, "…"));
    return h("div", {}, h("span", { class: "ln" }, fmt(line)),
      h("span", { class: "sid" }, "#" + String(rec.stimulus_id ?? "?")),
      h("span", { class: "type" }, String(rec.type ?? "")),
      h("span", { class: "q" }, questionOf(rec)));
  }

  function rolloutRow(line, rec, vl) {
    if (!rec) return h("div", { class: "pending" }, h("span", { class: "ln" }, fmt(line)), h("span", { class: "muted" }, "…"));
    const prev = line > 0 ? vl.record(line - 1) : null;
    const first = !prev || prev.stimulus_id !== rec.stimulus_id;
    const failedTraj = rec.response === null || rec.error;
    return h("div", { class: first ? "group-start" : "group-more" }, h("span", { class: "ln" }, fmt(line)),
      h("span", { class: "sid" }, `#${rec.stimulus_id ?? "?"}·${rec.trajectory_id ?? "?"}`),
      h("span", { class: "q" }, first ? questionOf(rec) : `↳ trajectory ${rec.trajectory_id ?? "?"}`),
      failedTraj ? h("span", { class: "badge status-failed" }, "failed")
        : h("span", { class: "tok" }, `${fmt(rec.tokens ?? (rec.response && rec.response.usage && rec.response.usage.total_tokens))} tok`));
  }

  // -- status and live updates ------------------------------------------------------------------------
  // Every status (a poll's, or an output page's envelope) redraws the job bar when what it shows changed —
  // a batch's answered requests and the cost move without a new line — and keeps polling while the job is active.
  let shown = null;
  function noteStatus(body) {
    job = { ...body, output: undefined };
    const key = JSON.stringify([job.status, job.lines, job.total_expected, job.progress_percent, job.failed_trajectories,
      job.stim_outdated, job.duplicate_stimuli, job.warning, job.error, job.config, job.usage, job.batches]);
    if (key !== shown) { shown = key; drawJob(); }
    list.setTotal(body.lines || 0);
    clearTimeout(timer);
    if (live && ACTIVE.has(job.status)) timer = setTimeout(poll, 1000);
  }

  function drawJob() {
    replace(jobbar, statusBadge(job.status), " ", h("span", { class: "lines", id: "line-count" }, `${fmt(job.lines ?? 0)} lines`),
      job.total_expected ? h("span", { class: "muted" }, ` of ${fmt(job.total_expected)} expected`) : null, " ",
      h("progress", { max: "100", value: String(job.progress_percent ?? 0) }),
      job.progress_percent !== null && job.progress_percent !== undefined ? ` ${job.progress_percent}%` : "",
      job.failed_trajectories ? h("span", { class: "error" }, ` · ${fmt(job.failed_trajectories)} failed trajectories`) : null,
      job.stim_outdated ? h("span", { class: "muted" }, " · stim changed since this rollout") : null,
      job.duplicate_stimuli && !job.warning ? h("span", { class: "muted", id: "duplicate-count" },
        ` · ${fmt(job.duplicate_stimuli)} stimuli with identical trajectories`) : null,
      job.config && job.config.model_name && rollout ? h("span", { class: "muted" }, ` · ${job.config.model_name}`) : null,
      usageNote(job.usage, job.config && job.config.max_cost_usd),
      job.error && !failedForBudget(job) ? h("span", { class: "error" }, " · " + job.error) : null,
      rollout ? batchNote() : null,
      // stopped before its cost could pass max_cost_usd: the runner's message, and what to do
      failedForBudget(job) ? h("div", { class: "budget-hint", id: "budget-hint", role: "alert" },
        h("strong", {}, "Stopped at its budget. "),
        `Raise max_cost_usd on the target and run the rollout again (POST …/rollout) to resume: the ${fmt(job.lines ?? 0)} `
          + "committed lines are kept and nothing already paid for is asked again.",
        h("div", { class: "budget-error", id: "job-error" }, job.error)) : null,
      // every stimulus got identical trajectories at a temperature above 0: the server is not sampling
      job.warning ? h("div", { class: "warning", id: "job-warning", role: "alert" }, "⚠ " + job.warning) : null);
  }

  // What the job's model requests cost: tokens (cached ones among them) and dollars, or why the dollars are unknown;
  // beside the dollars, the target's budget (max_cost_usd) when it has one.
  function usageNote(usage, budget) {
    const limit = typeof budget === "number"
      ? h("span", { id: "job-budget", class: failedForBudget(job) ? "budget over" : "budget",
        title: "max_cost_usd: the job stops before its cost could pass it" }, ` of ${budgetUsd(budget)} budget`) : null;
    if (!usage || !usage.requests) {
      return limit ? h("span", { class: "muted", id: "job-usage" }, h("span", { id: "job-cost", class: "budgeted" }, " · $0"), limit)
        : null;
    }
    const cached = usage.cached_input_tokens ? ` (${fmt(usage.cached_input_tokens)} cached)` : "";
    const tokens = ` · ${fmt(usage.requests)} requests, ${fmt(usage.input_tokens)}${cached} in / ${fmt(usage.output_tokens)} out tokens`;
    const cost = usage.cost_usd !== null && usage.cost_usd !== undefined
      ? h("span", { id: "job-cost", class: limit ? "budgeted" : null, title: `price table ${usage.price_table || "–"}` },
        ` · ${usd(usage.cost_usd)}`)
      : h("span", { id: "job-cost", class: "muted", title: usage.cost_unknown || "" }, " · cost unknown");
    return h("span", { class: "muted", id: "job-usage" }, tokens, cost, limit);
  }

  // A batch-mode rollout: its batches at the provider (the status's `batches`), whose results come a batch at a time.
  function batchNote() {
    if (!job.config || !job.config.batch) return null;
    const b = job.batches;
    const parts = [h("strong", {}, "batch mode")];
    if (b && b.running > 0) {
      const ids = (b.ids || []).join(", ");
      if (ACTIVE.has(job.status)) {
        parts.push(` · ${fmt(b.running)} of ${plural(b.submitted, "batch", "batches")} running`,
          h("span", { id: "batch-answered" }, ` · ${fmt(b.done)} of ${plural(b.requests, "request", "requests")} answered at the provider`),
          b.failed ? h("span", { class: "error" }, ` (${fmt(b.failed)} failed)`) : null,
          " · results are committed a batch at a time");
      } else {
        parts.push(` · ${plural(b.running, "batch", "batches")} not collected yet: running the rollout again picks `
          + `${b.running === 1 ? "it" : "them"} up`);
      }
      return h("div", { class: "batchline", id: "batch-note", title: ids ? `provider batch ids: ${ids}` : null }, parts);
    }
    return h("div", { class: "batchline", id: "batch-note" }, parts);
  }

  // -- the estimate (GET …/rollout/estimate): asked once, when the section is first opened, or again on request -----
  let estimateAsked = false;
  async function loadEstimate() {
    estimateAsked = true;
    const body = h("div", { class: "estbody", id: "estimate-body" }, h("p", { class: "loading" }, "Counting the rollout's tokens…"));
    replace(estimate, estimate.firstChild, body);
    let e;
    try { e = await getJSON(`${base}/estimate`); } catch (err) {
      if (!live || needSignIn(err)) return;
      // 400: the rollout's requests are not known yet (no complete stim job) or nothing to price (no model_name)
      const known = err instanceof ApiError && err.status === 400;
      replace(body, h("p", {}, h("span", { class: known ? "estimate-na" : "error", id: "estimate-problem" },
        known ? "No estimate yet: " : "The estimate failed: ", err.message), " ",
      h("button", { type: "button", id: "estimate-again", onclick: loadEstimate }, "Ask again")));
      return;
    }
    if (live) replace(body, estimateView(e));
  }

  function estimateView(e) {
    const t = e.tokens || {};
    const head = h("p", { class: "esthead" },
      `${plural(e.requests, "request", "requests")} (${plural(e.stimuli, "stimulus", "stimuli")} × ${fmt(e.num_traj_per_stimulus)}) · ${e.model}`,
      ` · ${fmt(t.input_total)} input tokens, ${fmt(t.output_total)} output at most (${fmt(t.output_per_request)} a request, `
        + `${OUTPUT_SOURCE[t.output_source] || t.output_source})`);
    const counted = h("p", { class: "muted", id: "estimate-counted" }, "tokens counted by ",
      h("span", { class: "counted-by", title: t.counted_by || "" }, COUNTED_BY[t.counted_by] || String(t.counted_by)),
      t.tokenizer ? ` (${t.tokenizer})` : "",
      t.counted_stimuli !== undefined ? ` · ${fmt(t.counted_stimuli)} of ${fmt(e.stimuli)} stimuli counted one by one` : "",
      ` · price table ${e.price_table || "–"}`);
    let table;
    if (!e.cost) table = h("p", { class: "error", id: "estimate-unknown" }, e.cost_unknown || "no price for this model");
    else {
      table = h("table", { class: "estimate-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "mode"), h("th", { class: "num" }, "expected"),
          h("th", { class: "num" }, "range (no output – worst case)"))),
        h("tbody", {}, MODES.map(([key, label, what]) => {
          const c = e.cost[key] || {};
          const mine = key === e.mode;
          const known = typeof c.usd === "number";
          return h("tr", { class: mine ? "current" : null, dataset: { mode: key } },
            h("th", { title: what }, label, mine ? h("span", { class: "badge mode-tag" }, "this target") : null),
            h("td", { class: "num expected", title: known ? null : c.unknown || "" }, known ? usd(c.usd) : "unknown"),
            h("td", { class: "num range" }, known ? `${usd(c.low_usd)} – ${usd(c.high_usd)}` : "–"));
        })));
    }
    const facts = [];
    if (typeof e.max_cost_usd === "number") {
      facts.push(h("p", { id: "estimate-budget", class: e.over_budget ? "error" : null }, `budget ${budgetUsd(e.max_cost_usd)} · `,
        e.over_budget ? `the worst case, ${usd(e.high_usd)}, is over it: the job would stop before passing it`
          : e.over_budget === false ? `the worst case, ${usd(e.high_usd)}, fits` : "the cost is unknown"));
    }
    const r = e.run;
    if (r) {
      const projecting = typeof r.projected_usd === "number" && r.remaining > 0;
      facts.push(h("p", { id: "estimate-run" }, `this rollout (${r.status}): ${fmt(r.answered)} of ${fmt(r.requests)} requests `
        + `answered, ${fmt(r.committed)} lines committed · spent ${r.spent_usd === null ? "unknown" : usd(r.spent_usd)}`,
      projecting ? h("strong", { id: "estimate-projected" }, ` · projected ${usd(r.projected_usd)}`) : null,
      projecting ? ` at ${usd(r.mean_usd_per_request)} a request for the ${fmt(r.remaining)} left` : null));
    }
    const notes = [...(t.notes || []), ...(e.notes || [])];
    if (notes.length) facts.push(h("ul", { class: "estnotes muted" }, notes.map((n) => h("li", {}, n))));
    facts.push(h("p", { class: "muted" }, `asked at ${new Date().toLocaleTimeString()} `,
      h("button", { type: "button", id: "estimate-again", onclick: loadEstimate }, "Ask again")));
    return [head, counted, h("div", { class: "estgrid" }, table, h("div", { class: "estfacts" }, facts))];
  }

  async function poll() {
    if (!live) return;
    try { noteStatus(await getJSON(base)); } catch (err) {
      if (!needSignIn(err) && live) timer = setTimeout(poll, 3000);
    }
  }

  function showProblem(err) {
    replace(sidebody, h("p", { class: "error", role: "alert" }, err.message));
  }

  function drawPrefix(first) {
    shared = { u: promptPrefix(first.unconditioned_stimulus), c: promptPrefix(first.conditioned_stimulus) };
    const parts = [];
    if (shared.u && shared.u.length) parts.push(messageList(shared.u, "Teacher (unconditioned)"));
    if (shared.c && shared.c.length) parts.push(messageList(shared.c, "Student (conditioned)"));
    if (!parts.length) return;
    const n = (shared.u || []).length + (shared.c || []).length;
    replace(prefix, h("summary", {}, `Shared prompt prefix — ${n} message${n === 1 ? "" : "s"} before the question, `
      + "identical on every line, shown once here"), h("div", { class: "sides" }, parts));
    prefix.hidden = false;
  }

  // -- the side panel ------------------------------------------------------------------------------------
  function showTab(name, user) {
    state.tab = name;
    for (const [k, b] of Object.entries(tabs)) b.setAttribute("aria-selected", String(k === name));
    if (user) setQuery({ tab: name === "line" ? null : name });
    if (name === "line") drawLine();
    else if (name === "search") drawSearch();
    else if (name === "sample") drawSample();
    else if (name === "stats") drawStats();
  }

  function selectLine(line, mark) {
    if (!list.total) return;
    state.line = Math.min(Math.max(0, line), list.total - 1);
    list.selected = state.line;
    list.reveal(state.line, mark);
    setQuery({ line: state.line });
    if (state.tab !== "line") showTab("line", true); else drawLine();
  }

  let drawnLine = null; // the line the Line tab shows; its page may still be on its way (list.onPage)
  function drawLine() {
    drawnLine = null;
    if (state.line === null) {
      replace(sidebody, h("p", { class: "muted" }, "Click a row (or press j) to see the whole line."));
      return;
    }
    const rec = list.record(state.line);
    if (rec === undefined) {
      replace(sidebody, h("p", { class: "loading" }, `Loading line ${fmt(state.line)}…`));
      return;
    }
    drawnLine = state.line;
    drawRecord(state.line, rec);
  }
  list.onPage = () => { if (live && state.tab === "line" && state.line !== null && drawnLine !== state.line) drawLine(); };

  function drawRecord(line, rec) {
    const head = h("div", { class: "linehead" }, h("strong", {}, `Line ${fmt(line)}`),
      ` · stimulus ${rec.stimulus_id ?? "?"}`, rec.trajectory_id !== undefined ? ` · trajectory ${rec.trajectory_id}` : "",
      rec.type ? ` · ${rec.type}` : "");
    const body = [head, h("p", { class: "question" }, questionOf(rec))];
    const sides = h("div", { class: "sides" },
      messageList(rec.unconditioned_stimulus && rec.unconditioned_stimulus.messages, "Teacher (unconditioned)", shared.u),
      messageList(rec.conditioned_stimulus && rec.conditioned_stimulus.messages, "Student (conditioned)", shared.c));
    if (rollout) {
      const r = rec.response;
      if (r === null || rec.error) body.push(h("div", { class: "failed-traj" }, h("strong", {}, "Failed trajectory: "),
        String(rec.error ?? "no response")));
      if (r) {
        const usage = r.usage || {};
        body.push(h("div", { class: "response" }, h("h3", {}, "Response"), renderMarkdown(contentText(r.content)),
          r.tool_calls ? h("pre", { class: "json" }, JSON.stringify(r.tool_calls, null, 2)) : null,
          h("p", { class: "muted tokens" }, `tokens: ${fmt(usage.prompt_tokens)} prompt + ${fmt(usage.completion_tokens)} `
            + `completion = ${fmt(usage.total_tokens ?? rec.tokens)} · finish: ${r.finish_reason ?? "–"}`
            + (rec.model ? ` · ${rec.model}` : "") + (rec.temperature !== undefined ? ` · T=${rec.temperature}` : ""))));
      }
      body.push(h("details", { class: "stimulus" }, h("summary", {}, "Stimulus: teacher and student"), sides));
    } else {
      body.push(sides);
      if (rec.trajectory_override_stimulus) body.push(h("p", { class: "muted" }, "Rollout uses the conditioned stimulus for this line."));
    }
    body.push(h("details", { class: "raw" }, h("summary", {}, "Raw JSON"), h("pre", { class: "json" }, JSON.stringify(rec, null, 2))));
    replace(sidebody, body);
  }

  // -- search -------------------------------------------------------------------------------------------
  function matcher(text) {
    if (!state.q) return [];
    const ranges = [];
    if (state.regex) {
      let re;
      try { re = new RegExp(state.q, "gi"); } catch (e) { return []; }
      for (const m of text.matchAll(re)) { if (!m[0]) break; ranges.push([m.index, m.index + m[0].length]); if (ranges.length > 50) break; }
    } else {
      const hay = text.toLowerCase(); const needle = state.q.toLowerCase();
      for (let i = hay.indexOf(needle); i >= 0 && ranges.length < 50; i = hay.indexOf(needle, i + needle.length)) ranges.push([i, i + needle.length]);
    }
    return ranges;
  }

  function snippet(rec) {
    const texts = state.field ? [fieldValue(rec, state.field)] : [questionOf(rec), rec.response && contentText(rec.response.content), rec.error];
    for (const t of texts) {
      if (t === undefined || t === null) continue;
      const text = typeof t === "string" ? t : JSON.stringify(t);
      const ranges = matcher(text);
      if (ranges.length || state.field) return clip(text, ranges);
    }
    const raw = JSON.stringify(rec);
    return clip(raw, matcher(raw));
  }

  function clip(text, ranges) {
    if (text.length <= 240 || !ranges.length) return highlighted(text.slice(0, 240), ranges.filter(([, e]) => e <= 240));
    const start = Math.max(0, ranges[0][0] - 80);
    const part = text.slice(start, start + 240);
    return ["…", ...highlighted(part, ranges.map(([s, e]) => [s - start, e - start]).filter(([s, e]) => s >= 0 && e <= part.length))];
  }

  function startSearch(push) {
    state.q = search.value; state.regex = regex.checked; state.field = field.value;
    setQuery({ q: state.q || null, regex: state.regex ? 1 : null, field: state.field || null, tab: "search" }, { push });
    if (searchRun) searchRun.abort();
    searchRun = null;
    searchPanel = null;
    showTab("search", false);
    for (const [k, b] of Object.entries(tabs)) b.setAttribute("aria-selected", String(k === "search"));
  }

  let searchPanel = null; // { key, nodes }: the last search's results, kept while its tab is left
  function drawSearch() {
    const key = JSON.stringify([state.q, state.regex, state.field]);
    if (searchPanel && searchPanel.key === key) { replace(sidebody, searchPanel.nodes); return; }
    if (!state.q) { replace(sidebody, h("p", { class: "muted" }, "Type in the search box and press Enter: substring (any case) or regex, in any field or one.")); return; }
    const progress = h("p", { class: "progress", id: "search-progress" }, "Searching…");
    const results = h("ol", { class: "matches" });
    const more = h("button", { type: "button", hidden: true }, "More matches");
    replace(sidebody, progress, results, more);
    searchPanel = { key, nodes: [progress, results, more] };
    const run = new AbortController();
    if (searchRun) searchRun.abort();
    searchRun = run;
    let found = 0;
    let next = 0;
    async function step(budget) {
      more.hidden = true;
      while (next !== null && budget > 0 && !run.signal.aborted) {
        const params = { offset: next, limit: Math.min(100, budget), field: state.field || null };
        params[state.regex ? "regex" : "q"] = state.q;
        let body;
        try { body = await getJSON(`${base}/output/search${query(params)}`, { signal: run.signal }); } catch (err) {
          if (err.name === "AbortError") return;
          if (needSignIn(err)) return;
          replace(progress, h("span", { class: "error" }, err.message));
          return;
        }
        for (const m of body.matches) {
          results.append(h("li", { dataset: { line: m.line } }, h("button", { type: "button", class: "match", onclick: () => selectLine(m.line, "viewer:match") },
            h("span", { class: "ln" }, fmt(m.line)), h("span", { class: "snippet" }, snippet(m.record)))));
        }
        found += body.matches.length;
        budget -= body.matches.length;
        next = body.next_offset;
        const scanned = next === null ? body.lines : next;
        replace(progress, `${fmt(found)} match${found === 1 ? "" : "es"} · scanned ${fmt(scanned)} of ${fmt(body.lines)} lines`,
          next === null ? " · done" : "…");
      }
      if (next !== null && !run.signal.aborted) more.hidden = false;
    }
    more.onclick = () => step(200);
    step(200);
  }

  // -- sample and stats ------------------------------------------------------------------------------------
  function drawSample() {
    const seed = h("input", { type: "number", id: "seed", min: "0", value: state.seed });
    const n = h("input", { type: "number", id: "sample-n", min: "1", max: "1000", value: "20" });
    const results = h("ol", { class: "matches samples" });
    const form = h("form", { class: "sampleform" }, h("label", {}, "seed ", seed), h("label", {}, "rows ", n),
      h("button", { type: "submit" }, "Draw sample"));
    const draw = async () => {
      state.seed = seed.value || "0";
      setQuery({ seed: state.seed, tab: "sample" });
      replace(results, h("li", { class: "loading" }, "Drawing…"));
      try {
        const body = await getJSON(`${base}/output/sample${query({ n: n.value || 20, seed: state.seed })}`);
        replace(results, body.samples.map((s) => h("li", { dataset: { line: s.line } },
          h("button", { type: "button", class: "match", onclick: () => selectLine(s.line) },
            h("span", { class: "ln" }, fmt(s.line)), h("span", { class: "snippet" }, questionOf(s.record))))));
        if (!body.samples.length) replace(results, h("li", { class: "muted" }, "No lines to sample yet."));
      } catch (err) { if (!needSignIn(err)) replace(results, h("li", { class: "error" }, err.message)); }
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); draw(); });
    replace(sidebody, form, results);
    draw();
  }

  async function drawStats() {
    replace(sidebody, h("p", { class: "loading" }, "Counting…"));
    let s;
    try { s = await getJSON(`${base}/output/stats`); } catch (err) { if (!needSignIn(err)) showProblem(err); return; }
    if (!live || state.tab !== "stats") return;
    const rows = [["lines", fmt(s.lines)], ["bytes", fmt(s.bytes)], ["distinct questions", fmt(s.distinct_questions)],
      ["repeated question lines", fmt(s.repeated_question_lines)]];
    if (s.rollout) rows.push(["trajectories", fmt(s.rollout.trajectories)], ["stimuli", fmt(s.rollout.stimuli)],
      ["failed trajectories", fmt(s.rollout.failed_trajectories)],
      ["stimuli with identical trajectories", `${fmt(s.rollout.duplicate_stimuli)} of ${fmt(s.rollout.compared_stimuli)} compared`],
      ["trajectories per stimulus", `${s.rollout.trajectories_per_stimulus.min}–${s.rollout.trajectories_per_stimulus.max} (mean ${s.rollout.trajectories_per_stimulus.mean})`]);
    const out = [h("table", { class: "stats" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))))];
    const types = Object.entries(s.by_type || {});
    if (types.length) out.push(h("h3", {}, "Lines per generator"), h("table", { class: "stats" }, h("tbody", {},
      types.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, fmt(v)))))));
    out.push(h("h3", {}, "Tokens"));
    if (s.tokens) {
      out.push(h("p", {}, `${fmt(s.tokens.count)} lines · mean ${fmt(s.tokens.mean)} · p50 ${fmt(s.tokens.p50)} · p90 ${fmt(s.tokens.p90)} · max ${fmt(s.tokens.max)}`));
      const hist = s.tokens.histogram || [];
      const peak = Math.max(1, ...hist.map((b) => b.count));
      out.push(h("div", { class: "histogram", role: "img", "aria-label": "token count histogram" }, hist.map((b) => {
        const bar = h("div", { class: "bin", title: `${fmt(b.low)}–${fmt(b.high)} tokens: ${fmt(b.count)} lines` });
        bar.style.height = `${Math.max(2, Math.round((b.count / peak) * 100))}%`;
        return bar;
      })), hist.length ? h("div", { class: "axis muted" }, h("span", {}, fmt(hist[0].low)), h("span", {}, fmt(hist[hist.length - 1].high))) : null);
    } else out.push(h("p", { class: "muted" }, "No token counts in this output (stim lines carry none)."));
    replace(sidebody, out);
  }

  // -- wiring ---------------------------------------------------------------------------------------------
  if (estimate) {
    estimate.addEventListener("toggle", () => {
      if (!live) return;
      setQuery({ estimate: estimate.open ? 1 : null });
      if (estimate.open && !estimateAsked) loadEstimate();
    });
    if (params.get("estimate") === "1") estimate.open = true;
  }
  searchForm.addEventListener("submit", (e) => { e.preventDefault(); startSearch(true); });
  gotoForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const n = parseInt(goto.value, 10);
    if (Number.isFinite(n)) { selectLine(n, "viewer:jump"); goto.blur(); list.el.focus(); }
  });

  async function start() {
    // One request for the rows the screen will show: centred on the line asked for, two pages cover them.
    const top = state.line === null ? 0 : Math.max(0, state.line - Math.ceil(list.viewRows() / 2) - 1);
    const first = Math.floor(top / PAGE) * PAGE;
    const page = await getJSON(`${base}/output${query({ offset: first, limit: state.line === null ? PAGE : 2 * PAGE })}`);
    if (!live) return;
    noteStatus(page);
    list.put(first, page.output);
    if (page.output.length && first === 0) drawPrefix(page.output[0]);
    else if (first !== 0) getJSON(`${base}/output${query({ offset: 0, limit: 1 })}`).then((b) => {
      if (live && b.output.length) { drawPrefix(b.output[0]); if (state.tab === "line" && drawnLine !== null) drawLine(); }
    }, () => null);
    if (state.line !== null) { list.selected = Math.min(state.line, Math.max(0, list.total - 1)); list.reveal(state.line, "viewer:rows"); }
    else list.reveal(0, "viewer:rows");
    showTab(state.tab in tabs ? state.tab : "line", false);
  }
  start().catch((err) => {
    if (!live) return;
    if (rollout && err instanceof ApiError && err.status === 404 && !(err.body && /^(repo|target) '/.test(err.body.message || "")))
      replace(main, h("nav", { class: "crumbs" }, navLink("/ui/", "Repos"), " / ", navLink(uiPath(repo), repo), " / ", target),
        h("p", {}, "No rollout for this target on this server. ", navLink(uiPath(repo, target, "stim"), "See its stim output")));
    else failed(err);
  });

  // The viewer's measurements (scripts/bench/bench_viewer.py reads them).
  window.__viewer = { list, jump: (n) => selectLine(n, "viewer:jump") };

  return {
    dispose() {
      live = false; clearTimeout(timer); list.dispose();
      if (searchRun) searchRun.abort();
    },
    keydown(e) {
      if (e.key === "j" || e.key === "k") {
        e.preventDefault();
        const at = state.line === null ? (e.key === "j" ? Math.floor(list.firstLine()) : 0) : state.line + (e.key === "j" ? 1 : -1);
        selectLine(at);
      } else if (e.key === "/") { e.preventDefault(); search.focus(); search.select(); }
      else if (e.key === "g") { e.preventDefault(); goto.focus(); goto.select(); }
      else if (e.key === "e" && estimate) { e.preventDefault(); estimate.open = !estimate.open; }
    },
  };
}

