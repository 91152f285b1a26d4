// A bake's page (/ui/repo/R/bake/B?sample=N&checkpoint=N&log=1&config=1): did it work? Its status
// and evaluation, the loss / eval loss / held-out KL and learning-rate charts (live while it trains:
// only the metrics rows past those already drawn are added), the teacher / base / baked answers
// to held-out questions side by side — the baked model at the end of training, or at any published
// checkpoint the user picks (evaluated once on request: "Evaluate checkpoint N" asks for it, then
// the page polls until it is stored) — checkpoints with their download links, the datasets, the
// lineage graph and the config. app.js routes here and hands in its navigation helpers.
import { ApiError, bakePath, enc, getJSON, query, sendJSON } from "./api.js";
import { fmt, h, num, replace } from "./dom.js";
import { LineChart } from "./chart.js";
import { drawGraph, lineageOf } from "./graph.js";
import { renderMarkdown } from "./markdown.js";

const ACTIVE = new Set(["preparing", "pending", "running", "incomplete"]); // the client polls while these
const EVALUATING = new Set(["pending", "running"]); // a checkpoint's evaluation: polled while these
const POLL_MS = 1000;

function pct(x) { return x === null || x === undefined || !Number.isFinite(x) ? "–" : `${Math.round(x * 100)} %`; }

export function bakeLossText(status) {
  const loss = status && status.loss;
  return loss && Number.isFinite(loss.latest_loss) ? num(loss.latest_loss) : "–";
}

export function newestCheckpoint(status) {
  const c = status && Array.isArray(status.checkpoints) && status.checkpoints.length ? status.checkpoints : null;
  return c ? Math.max(...c) : null;
}

// "2,400 of 3,000 steps" from the status, or what is known of it.
export function stepsText(status) {
  if (!status) return "";
  if (Number.isFinite(status.total_steps)) return `step ${fmt(status.steps_done ?? 0)} of ${fmt(status.total_steps)}`;
  if (status.steps_done > 0) return `step ${fmt(status.steps_done)}`;
  return "";
}

export function bakeView(repo, bake, params, { main, navLink, uiPath, needSignIn, failed, setQuery, statusBadge }) {
  const base = bakePath(repo, bake);
  let live = true;
  let timer = 0;
  let status = null;
  let seen = 0; // metrics rows already drawn
  let mark = ""; // what in the status says new rows may exist
  let evaluation = null;
  let shown = null; // the chosen checkpoint's evaluation state {step, status, error, note, after}; null: the bake's own
  let evalToken = 0; // bumped on every choice: answers to an older one are dropped
  let evalTimer = 0;
  const pickedStep = parseInt(params.get("checkpoint"), 10);
  const state = {
    sample: params.has("sample") ? Math.max(0, parseInt(params.get("sample"), 10) || 0) : null,
    checkpoint: Number.isFinite(pickedStep) && pickedStep >= 0 ? pickedStep : null, // null: the final evaluation
    log: params.get("log") === "1",
  };
  const timings = { redraws: [] };

  // -- the frame ---------------------------------------------------------------------------------
  const head = h("div", { class: "bakebar", id: "bake-status" }, h("span", { class: "loading" }, "Loading…"));
  const problem = h("div", { class: "bake-error", id: "bake-error", role: "alert", hidden: true });
  const summary = h("section", { class: "evalsum", id: "evaluation" });
  const lossChart = new LineChart({ id: "loss-chart", title: "Loss", log: state.log, series: [
    { key: "loss", label: "train loss" }, { key: "eval_loss", label: "eval loss", dots: true },
    { key: "heldout_kl", label: "held-out KL", dots: true }], onCursor: (x) => lrChart.setCursor(x, false) });
  const lrChart = new LineChart({ id: "lr-chart", title: "Learning rate", height: 130,
    series: [{ key: "lr", label: "learning rate" }], onCursor: (x) => lossChart.setCursor(x, false) });
  const logBox = h("input", { type: "checkbox", id: "log-scale", checked: state.log });
  logBox.addEventListener("change", () => setLog(logBox.checked));
  const chartNote = h("p", { class: "muted chart-note", id: "chart-note", hidden: true });
  const charts = h("section", { class: "charts", id: "charts" },
    h("div", { class: "sechead" }, h("h2", {}, "Training"),
      h("label", { class: "check" }, logBox, " log scale (l)"),
      h("span", { class: "muted keys" }, "← → on a chart moves its cursor · j/k questions · c config")),
    chartNote, lossChart.el, lrChart.el);
  const evalPick = h("select", { id: "eval-checkpoint", disabled: true },
    h("option", { value: "" }, "the end of training"));
  evalPick.addEventListener("change", () => chooseCheckpoint(evalPick.value === "" ? null : Number(evalPick.value)));
  const evalState = h("div", { class: "evalstate", id: "eval-state", role: "status", hidden: true });
  const sampleBody = h("div", { class: "samplebody" }, h("p", { class: "loading" }, "Loading the held-out answers…"));
  const samples = h("section", { class: "samples", id: "samples" },
    h("div", { class: "sechead" }, h("h2", {}, "Before and after"),
      h("label", { class: "pick" }, "baked model at ", evalPick)),
    evalState, sampleBody);
  const checkpoints = h("section", { class: "checkpoints", id: "checkpoints" }, h("h2", {}, "Checkpoints"));
  const datasets = h("section", { class: "datasets", id: "datasets" }, h("h2", {}, "Datasets"));
  const lineage = h("section", { class: "lineage", id: "lineage" }, h("h2", {}, "Lineage"),
    h("p", { class: "loading" }, "Loading the recipe…"));
  const configBody = h("pre", { class: "json" });
  const config = h("details", { class: "config", id: "config", open: params.get("config") === "1" },
    h("summary", {}, "Config (merged over its template)"), configBody);
  config.addEventListener("toggle", () => setQuery({ config: config.open ? "1" : null }));
  const page = h("div", { class: "bakepage" },
    h("nav", { class: "crumbs" }, navLink("/ui/", "Repos"), " / ", navLink(uiPath(repo), repo), " / ",
      h("span", { class: "kind" }, "bake"), " ", h("span", {}, bake)),
    head, problem, summary, charts, samples, h("div", { class: "pair" }, checkpoints, datasets), lineage, config);
  replace(main, page);

  // -- status ------------------------------------------------------------------------------------
  function noteStatus(body) {
    status = body;
    drawHead();
    drawProblem();
    drawSummary();
    drawCheckpoints();
    drawDatasets();
    drawPicker();
    configBody.textContent = JSON.stringify(body.config ?? null, null, 2);
    lossChart.setXMax(body.total_steps);
    lrChart.setXMax(body.total_steps);
    lossChart.setMarkers(body.checkpoints || []);
  }

  function drawHead() {
    const s = status;
    const loss = s.loss || null;
    const newest = newestCheckpoint(s);
    replace(head, statusBadge(s.status), " ",
      h("progress", { max: "100", value: String(s.progress_percent ?? (s.status === "complete" ? 100 : 0)) }),
      h("span", { id: "bake-progress" }, ` ${s.progress_percent !== null && s.progress_percent !== undefined ? `${num(s.progress_percent)}% ` : ""}`),
      stepsText(s) ? h("span", { class: "muted", id: "bake-steps" }, ` · ${stepsText(s)}`) : null,
      loss ? h("span", { id: "bake-loss" }, ` · loss ${num(loss.latest_loss)}`,
        h("span", { class: "muted" }, ` (min ${num(loss.min_loss)}, max ${num(loss.max_loss)}${Number.isFinite(loss.final_loss) ? `, final ${num(loss.final_loss)}` : ""})`)) : null,
      newest !== null ? h("span", { id: "bake-newest" }, " · newest checkpoint ", h("strong", {}, String(newest))) : null,
      s.job_id !== null && s.job_id !== undefined ? h("span", { class: "muted" }, ` · job ${s.job_id}`) : null);
  }

  function drawProblem() {
    if (status.status === "failed" || status.error) {
      replace(problem, h("strong", {}, status.status === "failed" ? "The bake failed: " : "Error: "),
        h("span", { class: "message" }, String(status.error || "no reason was recorded")));
      problem.hidden = false;
    } else problem.hidden = true;
  }

  // Held-out KL before → after and the behaviour check, from the status (or the stored evaluation).
  function drawSummary() {
    const ev = status.evaluation || (evaluation && evaluation.after) || null;
    const before = evaluation && evaluation.before;
    const out = [];
    const held = ev && ev.heldout;
    if (held && Number.isFinite(held.kl_before)) {
      const drop = Number.isFinite(held.kl_drop) ? held.kl_drop : (Number.isFinite(held.kl_after) ? 1 - held.kl_after / held.kl_before : null);
      out.push(metric("heldout-kl", "Held-out KL(teacher ‖ student)",
        [`${num(held.kl_before)} → ${num(held.kl_after)}`,
          drop !== null ? h("span", { class: drop > 0 ? "good" : "bad" }, ` ${drop > 0 ? "−" : "+"}${Math.abs(Math.round(drop * 100))} %`) : null],
        ` on ${fmt(held.examples)} held-out trajectories of ${fmt(held.stimuli)} questions`,
        bars([["before", held.kl_before], ["after", held.kl_after]], Math.max(held.kl_before, held.kl_after || 0))));
    } else if (before && before.heldout && Number.isFinite(before.heldout.kl)) {
      out.push(metric("heldout-kl", "Held-out KL(teacher ‖ student)", `${num(before.heldout.kl)} before training`,
        " · after: when the bake ends", null));
    } else if (held && held.reason) out.push(h("p", { class: "muted" }, `No held-out evaluation: ${held.reason}`));
    const beh = ev && ev.behaviour;
    if (beh && Number.isFinite(beh.baked_rate)) {
      const what = beh.check === "language" ? `Answers in ${beh.teacher_language || "the teacher's language"}` : `Behaviour (${beh.check})`;
      out.push(metric("behaviour", what, `teacher ${pct(beh.teacher_rate)} · base ${pct(beh.base_rate)} · baked ${pct(beh.baked_rate)}`,
        ` of ${fmt(beh.questions)} held-out questions`,
        bars([["teacher", beh.teacher_rate], ["base", beh.base_rate], ["baked", beh.baked_rate]], 1)));
    } else if (beh && beh.reason) out.push(h("p", { class: "muted" }, `No behaviour check: ${beh.reason}`));
    replace(summary, out);
    summary.hidden = out.length === 0;
  }

  function metric(id, label, value, note, chart) {
    return h("div", { class: "metric", id }, h("div", { class: "label" }, label),
      h("div", {}, h("span", { class: "value" }, value), h("span", { class: "muted" }, note), chart));
  }

  function bars(items, top) {
    return h("div", { class: "bars", role: "img", "aria-label": items.map(([k, v]) => `${k} ${num(v)}`).join(", ") },
      items.map(([k, v]) => {
        const fill = h("span", { class: `fill fill-${k}` });
        fill.style.width = `${Math.max(0, Math.min(100, top > 0 && Number.isFinite(v) ? (v / top) * 100 : 0))}%`;
        return h("span", { class: "bar" }, h("span", { class: "bk" }, k), h("span", { class: "track" }, fill));
      }));
  }

  function drawCheckpoints() {
    const steps = [...(status.checkpoints || [])].sort((a, b) => b - a);
    const names = new Map((status.model_name || []).map((m) => [Number(String(m).split("/").pop()), m]));
    const body = steps.length ? h("table", { class: "ckpts" }, h("tbody", {}, steps.map((step) => {
      const note = h("span", { class: "error dl-error" });
      const button = h("button", { type: "button", class: "download", dataset: { checkpoint: String(step) },
        onclick: () => download(step, button, note) }, "Download");
      return h("tr", { dataset: { checkpoint: String(step) } }, h("th", {}, `step ${fmt(step)}`),
        h("td", { class: "model" }, names.get(step) || `${bake}/${step}`), h("td", {}, button, note));
    }))) : h("p", { class: "muted" }, ACTIVE.has(status.status) ? "None yet: the first is saved as training goes."
      : "No checkpoint was published.");
    replace(checkpoints, h("h2", {}, "Checkpoints"), body);
  }

  // The download endpoint signs a link (an hour by default); the browser then fetches the .tar.gz.
  async function download(step, button, note) {
    button.disabled = true;
    replace(note, "");
    try {
      const body = await getJSON(`${base}/download${query({ checkpoint: step })}`);
      const url = new URL(String(body.url), location.href);
      if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("the server sent no http(s) link");
      window.__bakeDownload = url.href; // tests read where it went
      location.assign(url.href);
    } catch (err) {
      if (!needSignIn(err)) replace(note, " " + err.message);
    } finally {
      button.disabled = false;
    }
  }

  function drawDatasets() {
    const cfg = status.config || {};
    const counts = new Map();
    const data = status.data && typeof status.data === "object" ? status.data : null;
    for (const d of (data && Array.isArray(data.datasets) ? data.datasets : [])) if (d && d.target) counts.set(d.target, d);
    const list = Array.isArray(cfg.datasets) ? cfg.datasets : [];
    const rows = list.map((d) => {
      const c = counts.get(d.target) || {};
      const used = c.used ?? c.trajectories;
      return h("li", { dataset: { target: String(d.target) } },
        navLink(uiPath(repo, String(d.target), "rollout"), String(d.target)),
        h("span", { class: "muted" }, ` · weight ${num(d.weight ?? 1)}`,
          used !== undefined ? ` · ${fmt(used)} trajectories` : "",
          c.skipped_failed ? ` · ${fmt(c.skipped_failed)} failed skipped` : ""),
        " ", navLink(uiPath(repo, String(d.target), "stim"), h("span", { class: "muted" }, "stim")));
    });
    const extra = data ? Object.entries(data).filter(([, v]) => typeof v === "number") : [];
    replace(datasets, h("h2", {}, "Datasets"),
      rows.length ? h("ul", { class: "dsets" }, rows) : h("p", { class: "muted" }, "No datasets in the config."),
      Number.isFinite(cfg.total_trajectories) ? h("p", { class: "muted" }, `capped at ${fmt(cfg.total_trajectories)} trajectories`) : null,
      extra.length ? h("table", { class: "stats" }, h("tbody", {}, extra.map(([k, v]) => h("tr", {}, h("th", {}, k.replace(/_/g, " ")), h("td", {}, fmt(v)))))) : null);
  }

  // -- metrics -----------------------------------------------------------------------------------
  function addRows(rows) {
    if (!Array.isArray(rows)) return 0;
    if (rows.length < seen) { lossChart.reset(); lrChart.reset(); seen = 0; } // a new job's file
    for (let i = seen; i < rows.length; i++) {
      const r = rows[i];
      if (!r || typeof r !== "object") continue;
      if (r.type === "eval") {
        lossChart.add("eval_loss", r.iter, r.eval_loss);
        lossChart.add("heldout_kl", r.iter, r.heldout_kl);
      } else {
        lossChart.add("loss", r.iter, r.loss);
        lrChart.add("lr", r.iter, r.lr);
      }
    }
    const added = rows.length - seen;
    seen = rows.length;
    return added;
  }

  function redraw() {
    const t0 = performance.now();
    lossChart.flush();
    lrChart.flush();
    const ms = performance.now() - t0;
    timings.redraws.push(ms);
    drawChartNote();
    return ms;
  }

  function drawChartNote() {
    const empty = lossChart.points() === 0 && lrChart.points() === 0;
    lossChart.el.hidden = empty;
    lrChart.el.hidden = empty || lrChart.points() === 0;
    const s = status && status.status;
    chartNote.hidden = !empty;
    chartNote.textContent = !empty ? "" : s === "failed" ? "No training step was logged before the bake failed (its error is above)."
      : ACTIVE.has(s) ? "Waiting for the first training step…" : s === "complete" ? "This bake logged no metrics."
        : "Not run yet: the charts fill in as it trains.";
  }

  async function metrics() {
    try { return await getJSON(`${base}/metrics`); } catch (err) {
      if (err instanceof ApiError && err.status === 404 && !/^(repo|bake) '/.test((err.body && err.body.message) || "")) return [];
      throw err;
    }
  }

  // -- before and after ---------------------------------------------------------------------------
  async function loadEvaluation() {
    try { evaluation = await getJSON(`${base}/evaluation`); } catch (err) {
      if (needSignIn(err) || !live) return;
      evaluation = null;
      replace(sampleBody, h("p", { class: "muted" }, `The held-out answers are not available: ${err.message}`));
      return;
    }
    if (!live) return;
    drawSummary();
    drawPicker();
    if (state.checkpoint !== null && state.checkpoint !== finalStep()) loadChosen();
    else drawSamples();
  }

  // -- a checkpoint's evaluation, on request -----------------------------------------------------------
  function finalStep() {
    const after = evaluation && evaluation.after;
    return after && Number.isFinite(after.checkpoint) ? after.checkpoint : null;
  }

  // The checkpoints to pick from, newest first, each with where its evaluation stands.
  function drawPicker() {
    const steps = [...((status && status.checkpoints) || [])].sort((a, b) => b - a);
    const chosen = state.checkpoint ?? finalStep();
    if (chosen !== null && !steps.includes(chosen)) steps.unshift(chosen);
    const evals = (evaluation && evaluation.evaluations) || {};
    const fin = finalStep();
    const options = steps.map((step) => {
      const st = evals[String(step)];
      const note = step === fin ? " · end of training" : st === "complete" ? " · evaluated"
        : EVALUATING.has(st) ? " · evaluating…" : st === "failed" ? " · failed" : "";
      return h("option", { value: String(step) }, `step ${fmt(step)}${note}`);
    });
    if (chosen === null) options.unshift(h("option", { value: "" }, steps.length ? "the end of training" : "no checkpoint yet"));
    const sig = options.map((o) => `${o.value}=${o.textContent}`).join("|");
    if (sig !== evalPick.dataset.sig) { // unchanged options stay as they are (an open list is not closed under the user)
      replace(evalPick, options);
      evalPick.dataset.sig = sig;
    }
    evalPick.value = chosen === null ? "" : String(chosen);
    evalPick.disabled = steps.length === 0;
  }

  function chooseCheckpoint(step) {
    state.checkpoint = step === null || step === finalStep() ? null : step; // the default needs no URL
    setQuery({ checkpoint: state.checkpoint });
    loadChosen();
  }

  function loadChosen() {
    const token = ++evalToken;
    clearTimeout(evalTimer);
    if (state.checkpoint === null || state.checkpoint === finalStep()) {
      shown = null;
      drawPicker();
      drawEvalState();
      drawSamples();
      return;
    }
    shown = { step: state.checkpoint, status: "loading" };
    drawEvalState();
    fetchChosen(token);
  }

  // GET …/evaluation?checkpoint=N (the cookie reads it); polled while the evaluation is pending or running.
  async function fetchChosen(token) {
    const step = shown.step;
    let body;
    try { body = await getJSON(`${base}/evaluation${query({ checkpoint: step })}`); } catch (err) {
      if (needSignIn(err) || !live || token !== evalToken) return;
      shown = { step, status: "error", error: err.message };
      drawEvalState();
      drawSamples();
      return;
    }
    if (!live || token !== evalToken) return;
    shown = { step, status: body.status, error: body.error, note: body.note, after: body.after };
    if (evaluation) {
      evaluation.evaluations = body.evaluations || evaluation.evaluations;
      if (!evaluation.before) evaluation.before = body.before;
    }
    drawPicker();
    drawEvalState();
    drawSamples();
    if (EVALUATING.has(body.status)) evalTimer = setTimeout(() => fetchChosen(token), POLL_MS);
  }

  // "Evaluate checkpoint N": the viewer's one write (its own /ui route: the cookie does not count for API writes).
  async function evaluateChosen(button) {
    const step = shown.step;
    const token = ++evalToken;
    clearTimeout(evalTimer);
    button.disabled = true;
    try {
      const body = await sendJSON("POST", `/ui/repo/${enc(repo)}/bakes/${enc(bake)}/checkpoints/${step}/evaluation`, {});
      if (!live || token !== evalToken) return;
      shown = { step, status: body.status, error: body.error, note: body.note, after: body.evaluation };
      drawEvalState();
      fetchChosen(token);
    } catch (err) {
      if (needSignIn(err) || !live || token !== evalToken) return;
      shown = { step, status: "error", error: err.message };
      drawEvalState();
    }
  }

  function drawEvalState() {
    const s = shown;
    if (!s || s.status === "complete") { evalState.hidden = true; replace(evalState); return; }
    const step = fmt(s.step);
    const button = () => {
      const b = h("button", { type: "button", id: "evaluate-checkpoint", dataset: { checkpoint: String(s.step) } },
        `Evaluate checkpoint ${step}`);
      b.addEventListener("click", () => evaluateChosen(b));
      return b;
    };
    let body;
    if (s.status === "loading") body = h("span", { class: "muted" }, `Loading checkpoint ${step}…`);
    else if (s.status === "not_started") body = [h("span", {}, `Checkpoint ${step} has not been evaluated yet. `), button(),
      h("span", { class: "muted" }, " computes its held-out answers once, in a process of its own, and keeps them.")];
    else if (EVALUATING.has(s.status)) body = [h("span", { class: "busy" }, `Evaluating checkpoint ${step}… (${s.status})`),
      s.note ? h("span", { class: "muted" }, ` ${s.note}`) : null];
    else if (s.status === "failed") body = [h("strong", { class: "error" }, `The evaluation of checkpoint ${step} failed: `),
      h("span", { class: "message" }, String(s.error || "no reason was recorded")), " ", button()];
    else body = h("span", { class: "error" }, `Checkpoint ${step}: ${s.error || "not available"}`);
    replace(evalState, body);
    evalState.className = `evalstate evalstate-${s.status}`;
    evalState.hidden = false;
  }

  function drawSamples() {
    const fin = evaluation && evaluation.after;
    const after = shown ? (shown.after || null) : fin;
    const before = evaluation && evaluation.before;
    const source = after && Array.isArray(after.samples) && after.samples.length ? after.samples
      : before && Array.isArray(before.samples) && before.samples.length ? before.samples
        : fin && Array.isArray(fin.samples) ? fin.samples : [];
    const list = source.map((s) => (after && source === after.samples ? s : { ...s, baked: undefined, kl_after: undefined }));
    const beh = (after && after.behaviour) || (!shown && status && status.evaluation && status.evaluation.behaviour) || null;
    const lang = (beh && beh.teacher_language) || (fin && fin.behaviour && fin.behaviour.teacher_language) || null;
    const perStim = (before && before.heldout && before.heldout.per_stimulus) || {};
    const step = after && Number.isFinite(after.checkpoint) ? after.checkpoint : shown ? shown.step : null;
    const held = after && after.heldout;
    const kl = held && Number.isFinite(held.kl_before) && Number.isFinite(held.kl_after)
      ? ` Held-out KL at this checkpoint: ${num(held.kl_before)} → ${num(held.kl_after)}.` : "";
    const intro = after ? `Greedy answers to ${list.length} held-out questions${step !== null ? `, baked model at checkpoint ${step}${step === finalStep() ? " (the end of training)" : ""}` : ""}: `
      + `the teacher is the base model with the teacher prompt; base and baked get no prompt.${kl}`
      : shown ? `The teacher (base model with the teacher prompt) and the base model without it; the baked column fills in once checkpoint ${fmt(shown.step)} is evaluated.`
        : "Before training: the teacher (base model with the teacher prompt) and the base model without it. The baked column fills in when the bake ends.";
    const missing = shown ? "not evaluated" : after ? "not evaluated" : "after training";
    if (!list.length) {
      replace(sampleBody, h("p", { class: "muted" },
        status && status.status === "failed" ? "No held-out answers: the bake stopped before its evaluation."
          : status && ACTIVE.has(status.status) ? "The held-out answers are written when training starts and when it ends."
            : shown && shown.after ? `Checkpoint ${fmt(shown.step)} has no held-out answers${shown.after.reason ? `: ${shown.after.reason}` : ""}.`
              : "This bake stored no held-out answers (it has no eval split, or it was not run)."));
      return;
    }
    const items = list.map((s, i) => {
      const klBefore = s.kl_before ?? perStim[String(s.stimulus_id)];
      const kl = Number.isFinite(klBefore) ? h("span", { class: "kl" }, ` · KL ${num(klBefore)}${Number.isFinite(s.kl_after) ? ` → ${num(s.kl_after)}` : ""}`) : null;
      const card = h("article", { class: "sample", id: `sample-${i}`, tabindex: "-1", dataset: { sample: String(i) },
        onclick: () => selectSample(i, false) },
        h("div", { class: "qhead muted" }, `Question ${i + 1} of ${list.length}`,
          s.target ? ` · ${s.target}` : "", s.stimulus_id !== undefined ? ` · stimulus ${s.stimulus_id}` : "", kl),
        h("p", { class: "question" }, String(s.question ?? "(no question text)")),
        h("div", { class: "three" },
          answer("Teacher", "base model + teacher prompt", s.teacher, lang, "teacher"),
          answer("Base", "no prompt", s.base, lang, "base"),
          answer("Baked", step !== null ? `step ${fmt(step)} · no prompt` : "no prompt", s.baked, lang, "baked", missing)));
      return card;
    });
    replace(sampleBody, h("p", { class: "muted", id: "samples-intro" }, intro), h("div", { class: "samplelist" }, items));
    if (state.sample !== null) selectSample(Math.min(state.sample, items.length - 1), true);
  }

  function answer(title, sub, side, lang, cls, missing = "–") {
    const got = side && typeof side.answer === "string";
    const l = side && side.language;
    const chip = l ? h("span", { class: `lang ${lang ? (l === lang ? "lang-ok" : "lang-off") : ""}`,
      title: lang ? (l === lang ? `answered in ${l}, the teacher's language` : `answered in ${l}, not ${lang}`) : `language: ${l}` },
    lang ? `${l} ${l === lang ? "✓" : "✗"}` : l) : null;
    return h("div", { class: `answer col-${cls}` }, h("h3", {}, title, h("span", { class: "muted" }, ` · ${sub}`), " ", chip),
      got ? renderMarkdown(side.answer) : h("p", { class: "muted" }, missing));
  }

  function selectSample(i, scroll) {
    const cards = samples.querySelectorAll("article.sample");
    if (!cards.length) return;
    const at = Math.max(0, Math.min(cards.length - 1, i));
    state.sample = at;
    for (const c of cards) c.classList.toggle("selected", Number(c.dataset.sample) === at);
    setQuery({ sample: at });
    if (scroll) { cards[at].scrollIntoView({ block: "nearest" }); cards[at].focus({ preventScroll: true }); }
  }

  // -- lineage -----------------------------------------------------------------------------------
  async function loadLineage() {
    const repoPath = `/v1/repo/${enc(repo)}`;
    let graph;
    let tree = null;
    try {
      [graph, tree] = await Promise.all([getJSON(`${repoPath}/recipe/${enc(bake)}/dependency-graph`),
        getJSON(`${repoPath}/tree`).catch((err) => { if (err instanceof ApiError && err.status === 401) throw err; return null; })]);
    } catch (err) {
      if (needSignIn(err) || !live) return;
      replace(lineage, h("h2", {}, "Lineage"), h("p", { class: "muted" }, `The recipe is not available: ${err.message}`));
      return;
    }
    if (!live) return;
    const children = ((tree && tree.edges) || []).filter((e) => Array.isArray(e) && e[0] === "bake" && e[2] === "bake" && e[3] === bake)
      .map((e) => String(e[1]));
    const statuses = {};
    for (const [name, b] of Object.entries((tree && tree.bakes) || {})) statuses[name] = b && b.status;
    if (status) statuses[bake] = status.status;
    const { nodes, edges } = lineageOf(graph, bake, children, statuses, {
      prompt: (p) => ({ href: `${repoPath}/prompts/${enc(p)}`, nav: false }),
      target: (t) => ({ href: uiPath(repo, t, "rollout"), nav: true }),
      bake: (b) => ({ href: `/ui/repo/${enc(repo)}/bake/${enc(b)}`, nav: true }),
    });
    replace(lineage, h("h2", {}, "Lineage"),
      h("p", { class: "muted" }, `base model ${graph.base_model || "–"} · prompts → targets → bakes → bakes made from them`),
      h("div", { class: "graphbox" }, drawGraph(nodes, edges, `lineage of bake ${bake}`)));
  }

  // -- live ----------------------------------------------------------------------------------------
  function rowsMark(s) {
    return [s.status, s.steps_done, (s.checkpoints || []).length, s.loss && s.loss.latest_loss, s.progress_percent].join("|");
  }

  async function poll() {
    if (!live) return;
    try {
      const s = await getJSON(base);
      if (!live) return;
      const was = status && status.status;
      noteStatus(s);
      const next = rowsMark(s);
      if (next !== mark) {
        mark = next;
        const rows = await metrics();
        if (!live) return;
        if (addRows(rows)) redraw();
        else drawChartNote();
      }
      if (was !== s.status && !ACTIVE.has(s.status)) { loadEvaluation(); loadLineage(); }
      if (ACTIVE.has(s.status)) timer = setTimeout(poll, POLL_MS);
    } catch (err) {
      if (!needSignIn(err) && live) timer = setTimeout(poll, 3 * POLL_MS);
    }
  }

  function setLog(on) {
    state.log = on;
    logBox.checked = on;
    lossChart.setLog(on);
    setQuery({ log: on ? "1" : null });
  }

  async function start() {
    const [s, rows] = await Promise.all([getJSON(base), metrics()]);
    if (!live) return;
    noteStatus(s);
    mark = rowsMark(s);
    addRows(rows);
    const ms = redraw();
    performance.mark("bake:chart");
    timings.firstDrawMs = ms;
    // after the next paint: a task queued from the frame callback runs once that frame is drawn
    requestAnimationFrame(() => setTimeout(() => { if (live) performance.mark("bake:painted"); }, 0));
    loadEvaluation();
    loadLineage();
    if (ACTIVE.has(s.status)) timer = setTimeout(poll, POLL_MS);
  }
  start().catch((err) => { if (live) failed(err); });

  // The page's measurements and hooks (tests and scripts/bench/bench_viewer_bake.py read them).
  window.__bake = { lossChart, lrChart, timings, addRows, redraw, rows: () => seen };

  return {
    dispose() { live = false; clearTimeout(timer); clearTimeout(evalTimer); lossChart.dispose(); lrChart.dispose(); },
    keydown(e) {
      if (e.key === "j" || e.key === "k") {
        e.preventDefault();
        selectSample(state.sample === null ? 0 : state.sample + (e.key === "j" ? 1 : -1), true);
      } else if (e.key === "l") { e.preventDefault(); setLog(!state.log); }
      else if (e.key === "c") { e.preventDefault(); config.open = !config.open; if (config.open) config.scrollIntoView({ block: "nearest" }); }
    },
  };
}
