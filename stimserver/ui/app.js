// The viewer: a small single-page app with history-API routing. Every view has its URL:
//   /ui/                                         repos
//   /ui/signin                                   sign-in
//   /ui/repo/R                                   targets of repo R, with their jobs
//   /ui/repo/R/target/T/KIND?line=&q=&regex=&field=&tab=&seed=&estimate=   a job's output (KIND: stim | rollout)
//   /ui/repo/R/bake/B?sample=&log=&config=       a bake: charts, before/after answers, lineage
import { ApiError, bakePath, enc, getJSON, query, sendJSON, targetPath } from "./api.js";
import { bakeLossText, bakeView, newestCheckpoint, stepsText } from "./bake.js";
import { fmt, h, num, replace } from "./dom.js";
import { outputView } from "./output.js";

const ACTIVE = new Set(["pending", "running"]);
const BAKE_ACTIVE = new Set(["preparing", "pending", "running", "incomplete"]);
const main = document.getElementById("main");
const who = document.getElementById("who");
let me = null; // GET /ui/session, once known
let view = null; // the current view: { dispose(), keydown?(e) }

// -- routing ------------------------------------------------------------------------------------
function navigate(url, { replace: swap = false } = {}) {
  if (swap) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

function setQuery(params, { push = false } = {}) {
  const url = new URL(location.href);
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === "" || v === false) url.searchParams.delete(k);
    else url.searchParams.set(k, String(v));
  }
  if (url.href === location.href) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function route() {
  if (view) view.dispose();
  view = null;
  const parts = location.pathname.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(location.search);
  if (parts[0] === "signin") view = signInView(params.get("next"));
  else if (parts[0] === "repo" && parts.length === 2) view = targetsView(parts[1]);
  else if (parts[0] === "repo" && parts[2] === "target" && parts.length === 5 && ["stim", "rollout"].includes(parts[4]))
    view = outputView(parts[1], parts[3], parts[4], params,
      { main, navLink, uiPath, needSignIn, failed, setQuery, statusBadge });
  else if (parts[0] === "repo" && parts[2] === "bake" && parts.length === 4)
    view = bakeView(parts[1], parts[3], params, { main, navLink, uiPath, needSignIn, failed, setQuery, statusBadge });
  else if (parts.length === 0) view = reposView();
  else view = notFoundView();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
document.addEventListener("keydown", (e) => {
  const typing = e.target.closest && e.target.closest("input, textarea, select");
  if (e.key === "Escape" && typing) { e.target.blur(); return; }
  if (typing || e.metaKey || e.ctrlKey || e.altKey) return;
  if (view && view.keydown) view.keydown(e);
});

function navLink(href, ...children) {
  return h("a", { href, "data-nav": "" }, ...children);
}

function uiPath(repo, target, kind) {
  let p = `/ui/repo/${enc(repo)}`;
  if (target !== undefined) p += `/target/${enc(target)}/${kind}`;
  return p;
}

// -- signing in and out -----------------------------------------------------------------------------
async function loadMe() {
  try { me = await getJSON("/ui/session"); } catch (e) { me = null; }
  drawWho();
  return me;
}

function drawWho() {
  if (!me) { replace(who, navLink("/ui/signin", "Sign in")); return; }
  const label = me.is_master
    ? (me.user === me.key_user ? `${me.user} (master key)` : `viewing as ${me.user} (master key)`)
    : me.user;
  replace(who, h("span", { class: "me" }, label), " ",
    me.is_master ? navLink("/ui/signin", "switch user") : null, " ",
    h("button", { type: "button", id: "signout", onclick: signOut }, "Sign out"));
}

async function signOut() {
  await sendJSON("DELETE", "/ui/session").catch(() => null);
  me = null;
  drawWho();
  navigate("/ui/signin");
}

function needSignIn(err) {
  if (err instanceof ApiError && err.status === 401) {
    me = null;
    drawWho();
    navigate("/ui/signin" + query({ next: location.pathname + location.search }), { replace: true });
    return true;
  }
  return false;
}

function signInView(next) {
  const key = h("input", { type: "password", id: "key", autocomplete: "off", spellcheck: "false",
    placeholder: "ssk_… or the master key", required: true });
  const users = h("datalist", { id: "users" }, ((me && me.users) || []).map((u) => h("option", { value: u })));
  const user = h("input", { type: "text", id: "view-as", list: "users", autocomplete: "off",
    placeholder: "master key only: a user to view as" });
  const problem = h("p", { class: "error", role: "alert" });
  // method=post and no input names: even with the script gone, a key is never sent in a URL.
  const form = h("form", { class: "signin", method: "post", action: "/ui/session" },
    h("h1", {}, "Sign in to the viewer"),
    h("label", { for: "key" }, "API key"), key,
    h("label", { for: "view-as" }, "View as user (optional)"), user, users,
    h("button", { type: "submit" }, "Sign in"), problem,
    h("p", { class: "hint" }, "The key is sent once, in the body of this request; the server answers with an ",
      "HttpOnly session cookie. It is not kept by this page."));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { key: key.value };
    if (user.value.trim()) body.user = user.value.trim();
    key.value = "";
    try {
      me = await sendJSON("POST", "/ui/session", body);
      drawWho();
      navigate(next && next.startsWith("/ui/") ? next : "/ui/", { replace: true });
    } catch (err) {
      replace(problem, err.message);
    }
  });
  replace(main, form);
  key.focus();
  return { dispose() {} };
}

function notFoundView() {
  replace(main, h("p", {}, "No such page. ", navLink("/ui/", "Back to the repos")));
  return { dispose() {} };
}

function failed(err) {
  if (needSignIn(err)) return;
  replace(main, h("p", { class: "error", role: "alert" }, err.message));
}

// -- repos and targets ------------------------------------------------------------------------------
function reposView() {
  let live = true;
  replace(main, h("p", { class: "loading" }, "Loading repos…"));
  getJSON("/v1/repo").then((body) => {
    if (!live) return;
    const repos = body.repos || [];
    replace(main, h("nav", { class: "crumbs" }, h("span", {}, "Repos")),
      repos.length ? h("ul", { class: "repos" }, repos.map((r) => h("li", {}, navLink(uiPath(r), r))))
        : h("p", {}, "No repos yet for this user."));
  }, (err) => live && failed(err));
  return { dispose() { live = false; } };
}

function statusBadge(status) {
  const s = String(status ?? "unknown");
  return h("span", { class: `badge status-${s.replace(/[^a-z_]/g, "")}` }, s.replace("_", " "));
}

function jobSummary(job) {
  if (!job) return h("span", { class: "muted" }, "no rollout");
  return h("span", { class: "job" }, statusBadge(job.status), " ",
    h("span", { class: "lines" }, job.lines === null ? "–" : `${fmt(job.lines)} lines`),
    job.total_expected ? h("span", { class: "muted" }, ` of ${fmt(job.total_expected)}`) : null, " ",
    h("progress", { max: "100", value: String(job.progress_percent ?? 0) }),
    job.error ? h("span", { class: "error" }, " " + job.error) : null);
}

async function jobStatus(repo, target, kind) {
  try { return await getJSON(`${targetPath(repo, target)}/${kind}`); } catch (err) {
    if (kind === "rollout" && err instanceof ApiError && err.status === 404) return null; // no rollout
    throw err;
  }
}

function bakeHref(repo, bake) {
  return `/ui/repo/${enc(repo)}/bake/${enc(bake)}`;
}

// Bakes of a repo with their statuses; null where the server does not serve bakes.
async function bakeStatuses(repo) {
  let names;
  try { names = (await getJSON(`/v1/repo/${enc(repo)}/bakes`)).bakes || []; } catch (err) {
    if (err instanceof ApiError && err.status === 404 && !/^repo '/.test((err.body && err.body.message) || "")) return null;
    throw err;
  }
  return Promise.all(names.map(async (b) => [b, await getJSON(bakePath(repo, b)).catch((err) => {
    if (err instanceof ApiError && err.status === 401) throw err;
    return { status: "unknown", error: err.message };
  })]));
}

function bakeRow(repo, name, s) {
  const newest = newestCheckpoint(s);
  const held = s.evaluation && s.evaluation.heldout;
  return h("tr", { dataset: { bake: name } },
    h("td", {}, navLink(bakeHref(repo, name), h("strong", {}, name))),
    h("td", {}, navLink(bakeHref(repo, name), h("span", { class: "job" }, statusBadge(s.status), " ",
      h("progress", { max: "100", value: String(s.progress_percent ?? (s.status === "complete" ? 100 : 0)) }),
      h("span", { class: "muted steps" }, stepsText(s))))),
    h("td", { class: "loss" }, bakeLossText(s)),
    h("td", { class: "newest" }, newest === null ? h("span", { class: "muted" }, "–") : String(newest)),
    h("td", { class: "heldout" }, held && Number.isFinite(held.kl_before) && Number.isFinite(held.kl_after)
      ? `${num(held.kl_before)} → ${num(held.kl_after)}` : h("span", { class: "muted" }, "–")),
    h("td", {}, s.error ? h("span", { class: "error" }, s.error) : null));
}

function targetsView(repo) {
  let live = true;
  let timer = 0;
  const table = h("tbody");
  const bakeBody = h("tbody");
  const bakes = h("section", { class: "bakes", id: "bakes", hidden: true }, h("h2", {}, "Bakes"),
    h("table", { class: "targets bakes-table" }, h("thead", {}, h("tr", {}, h("th", {}, "Bake"), h("th", {}, "Status"),
      h("th", {}, "Latest loss"), h("th", {}, "Newest checkpoint"), h("th", {}, "Held-out KL"), h("th", {}, ""))), bakeBody));
  replace(main, h("nav", { class: "crumbs" }, navLink("/ui/", "Repos"), " / ", h("span", {}, repo)),
    h("div", { class: "repopage" },
      h("table", { class: "targets" }, h("thead", {}, h("tr", {}, h("th", {}, "Target"), h("th", {}, "Stim"),
        h("th", {}, "Rollout"), h("th", {}, "Bakes"))), table), bakes));
  async function refresh() {
    const [names, baked] = await Promise.all([getJSON(`/v1/repo/${enc(repo)}/targets`).then((b) => b.targets || []),
      bakeStatuses(repo)]);
    const rows = await Promise.all(names.map(async (t) =>
      [t, ...(await Promise.all([jobStatus(repo, t, "stim"), jobStatus(repo, t, "rollout")]))]));
    if (!live) return;
    const usedBy = (t) => (baked || []).filter(([, s]) => ((s.config && s.config.datasets) || []).some((d) => d && d.target === t));
    replace(table, rows.length ? rows.map(([t, stim, rollout]) => h("tr", { dataset: { target: t } },
      h("td", {}, h("strong", {}, t)),
      h("td", {}, navLink(uiPath(repo, t, "stim"), jobSummary(stim))),
      h("td", {}, rollout ? navLink(uiPath(repo, t, "rollout"), jobSummary(rollout)) : jobSummary(null)),
      h("td", { class: "usedby" }, h("span", { class: "bakerefs" }, usedBy(t).map(([b, s]) => h("span", { class: "bakeref" },
        navLink(bakeHref(repo, b), b), " ", statusBadge(s.status)))))))
      : h("tr", {}, h("td", { colspan: "4" }, "No targets in this repo.")));
    bakes.hidden = baked === null;
    replace(bakeBody, baked && baked.length ? baked.map(([b, s]) => bakeRow(repo, b, s))
      : h("tr", {}, h("td", { colspan: "6", class: "muted" }, "No bakes in this repo.")));
    if (rows.some(([, s, r]) => ACTIVE.has(s.status) || (r && ACTIVE.has(r.status)))
        || (baked || []).some(([, s]) => BAKE_ACTIVE.has(s.status)))
      timer = setTimeout(() => refresh().catch((e) => live && failed(e)), 1500);
  }
  refresh().catch((err) => live && failed(err));
  return { dispose() { live = false; clearTimeout(timer); } };
}

// -- start ----------------------------------------------------------------------------------------------
loadMe();
route();
