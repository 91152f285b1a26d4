// A virtual list of fixed-height rows over a paged source: only the rows in view exist in
// the DOM, and only the pages they fall on are fetched (an in-flight page that scrolled out
// of view is aborted). Past MAX_PX the scroll range is scaled, so 10 million rows scroll in
// a browser whose elements cannot be that tall; line numbers stay exact.
import { h, clear } from "./dom.js";

const MAX_PX = 15_000_000;
const CACHE_PAGES = 80;

export class VirtualList {
  constructor({ rowHeight = 28, pageSize = 50, fetchPage, renderRow, onSelect }) {
    this.row = rowHeight;
    this.pageSize = pageSize;
    this.fetchPage = fetchPage; // (offset, limit, signal) → Promise<records[]>
    this.renderRow = renderRow; // (line, record|undefined, list) → Node
    this.onSelect = onSelect;
    this.total = 0;
    this.selected = null;
    this.pages = new Map(); // page number → records
    this.inflight = new Map(); // page number → AbortController
    this.stats = { pagesFetched: 0, rowsFetched: 0, aborted: 0 };
    this.pendingMark = null;
    this.el = h("div", { class: "vlist", tabindex: "0", role: "list" });
    this.spacer = h("div", { class: "vspacer" });
    this.window = h("div", { class: "vwindow" });
    this.el.append(this.spacer, this.window);
    this.el.addEventListener("scroll", () => this.schedule());
    // Scaled (past MAX_PX), a pixel of scrollbar is more than a pixel of rows: the wheel moves rows
    // itself, so it scrolls as far as it does on a short list and skips no line.
    this.el.addEventListener("wheel", (e) => {
      if (this.fullPx() <= MAX_PX || e.ctrlKey) return;
      e.preventDefault();
      const px = e.deltaMode === 1 ? e.deltaY * this.row : e.deltaMode === 2 ? e.deltaY * this.el.clientHeight : e.deltaY;
      this.scrollToFirst(this.firstLine() + px / this.row);
    }, { passive: false });
    this.el.addEventListener("click", (e) => {
      const row = e.target.closest(".row");
      if (row && row.dataset.line !== undefined) this.onSelect(Number(row.dataset.line));
    });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.el);
    this.frame = 0;
  }

  dispose() {
    this.resize.disconnect();
    for (const c of this.inflight.values()) c.abort();
    this.inflight.clear();
    cancelAnimationFrame(this.frame);
  }

  // -- geometry ---------------------------------------------------------------------------
  viewRows() { return Math.max(1, Math.ceil((this.el.clientHeight || 600) / this.row)); }
  fullPx() { return this.total * this.row; }
  spacerPx() { return Math.min(this.fullPx(), MAX_PX); }
  maxFirst() { return Math.max(0, this.total - (this.el.clientHeight || 600) / this.row); }

  firstLine() {
    const top = this.el.scrollTop;
    if (this.fullPx() <= MAX_PX) return top / this.row;
    const range = this.spacerPx() - this.el.clientHeight;
    return range > 0 ? (top / range) * this.maxFirst() : 0;
  }

  scrollToFirst(first) {
    first = Math.min(Math.max(0, first), this.maxFirst());
    if (this.fullPx() <= MAX_PX) this.el.scrollTop = first * this.row;
    else {
      const range = this.spacerPx() - this.el.clientHeight;
      this.el.scrollTop = this.maxFirst() > 0 ? (first / this.maxFirst()) * range : 0;
    }
    this.render();
  }

  // -- public -----------------------------------------------------------------------------
  setTotal(total) {
    if (total === this.total) return;
    const grew = total > this.total;
    const atEnd = this.total > 0 && this.firstLine() + this.viewRows() >= this.total - 0.5;
    if (grew) { // a page read short (the end of the lines then) is read again
      for (const [p, records] of [...this.pages]) if (records.length < this.pageSize && p * this.pageSize + records.length < total) this.pages.delete(p);
    } else this.pages.clear();
    this.total = total;
    this.spacer.style.height = this.spacerPx() + "px";
    if (grew && atEnd && this.follow) this.scrollToFirst(total);
    else this.schedule();
  }

  // Scroll so that `line` is in view (centred when it was not); `mark` names a performance mark
  // set once every row in view is on screen.
  reveal(line, mark) {
    if (mark) this.pendingMark = mark;
    const first = this.firstLine();
    const rows = this.viewRows();
    if (line < first || line > first + rows - 2) this.scrollToFirst(line - Math.floor(rows / 2));
    else this.render();
  }

  select(line) {
    if (this.total === 0) return;
    this.selected = Math.min(Math.max(0, line), this.total - 1);
    this.reveal(this.selected);
  }

  record(line) {
    const page = this.pages.get(Math.floor(line / this.pageSize));
    return page ? page[line % this.pageSize] : undefined;
  }

  // -- drawing ------------------------------------------------------------------------------
  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  render() {
    const firstF = this.firstLine();
    const first = Math.floor(firstF);
    const count = Math.min(this.viewRows() + 1, Math.max(0, this.total - first));
    this.window.style.transform = `translateY(${this.el.scrollTop}px)`;
    const rows = [];
    let missing = false;
    for (let k = 0; k < count; k++) {
      const line = first + k;
      const rec = this.record(line);
      if (rec === undefined) missing = true;
      const node = this.renderRow(line, rec, this);
      node.classList.add("row");
      if (line === this.selected) node.classList.add("selected");
      node.dataset.line = String(line);
      node.style.top = ((k - (firstF - first)) * this.row) + "px";
      rows.push(node);
    }
    clear(this.window).append(...rows);
    this.load(first, count);
    if (!missing && this.pendingMark) {
      performance.mark(this.pendingMark);
      this.pendingMark = null;
    }
  }

  load(first, count) {
    const wanted = new Set();
    if (count > 0) {
      for (let p = Math.floor(first / this.pageSize); p <= Math.floor((first + count - 1) / this.pageSize); p++) wanted.add(p);
    }
    for (const [p, controller] of this.inflight) {
      if (!wanted.has(p)) { controller.abort(); this.inflight.delete(p); this.stats.aborted++; }
    }
    for (const p of wanted) {
      if (this.pages.has(p) || this.inflight.has(p)) continue;
      const controller = new AbortController();
      this.inflight.set(p, controller);
      this.fetchPage(p * this.pageSize, this.pageSize, controller.signal).then((records) => {
        if (this.inflight.get(p) !== controller) return;
        this.inflight.delete(p);
        this.stats.pagesFetched++;
        this.stats.rowsFetched += records.length;
        this.pages.set(p, records);
        while (this.pages.size > CACHE_PAGES) this.pages.delete(this.pages.keys().next().value);
        this.schedule();
        if (this.onPage) this.onPage(p);
      }, (err) => {
        if (this.inflight.get(p) === controller) this.inflight.delete(p);
        if (err && err.name !== "AbortError" && this.onError) this.onError(err);
      });
    }
  }

  // A page fetched elsewhere (e.g. the first one, with the job's status) joins the cache.
  put(offset, records) {
    if (offset % this.pageSize !== 0) return;
    for (let at = 0; at < records.length || at === 0; at += this.pageSize) {
      const page = records.slice(at, at + this.pageSize);
      if (page.length === this.pageSize || offset + at + page.length >= this.total) this.pages.set((offset + at) / this.pageSize, page);
      if (!records.length) break;
    }
  }
}
