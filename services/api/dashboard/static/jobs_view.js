// The jobs list: status, method, model, created, progress; a row opens the job.

import {jobsApi} from "./api.js";
import {
  ACTIVE_STATUSES, el, formatAge, formatDuration, formatRemaining, formatTime, replaceChildren, statusBadge,
} from "./dom.js";

const PAGE = 100;
const MAX_LIMIT = 1000;

/**
 * Fraction done in [0, 1], or null when unknown (drawn as an indeterminate bar). The job view knows the
 * last reported step; against the spec's max_steps that gives the fraction.
 */
export function jobProgress(job, lastStep) {
  if (job.status === "succeeded") return 1;
  if (typeof job.progress === "number") return job.progress > 1 ? job.progress / 100 : job.progress;
  const step = lastStep ?? job.current_step;
  const total = job.total_steps ?? job.spec?.training?.max_steps;
  if (typeof step === "number" && typeof total === "number" && total > 0) return Math.min(1, step / total);
  return null;
}

export function methodOf(job) {
  if (job.method && typeof job.method === "object") return job.method.type || "—";
  return job.method || "—";
}

export function progressBar(job, lastStep) {
  const fraction = jobProgress(job, lastStep);
  const active = ACTIVE_STATUSES.has(job.status);
  if (fraction === null && !active) return el("span", {class: "muted"}, "—");
  if (fraction === null) {
    const moving = job.status === "running";
    return el("div", {class: `progress ${moving ? "progress-indeterminate" : ""}`, title: job.status},
      el("div", {class: "progress-fill", style: moving ? "" : "width:0%"}));
  }
  const percent = Math.round(fraction * 100);
  return el("div", {class: "progress-wrap"},
    el("div", {class: `progress ${active ? "" : "progress-done"}`, role: "progressbar", "aria-valuenow": percent},
      el("div", {class: `progress-fill fill-${job.status}`, style: `width:${percent}%`})),
    el("span", {class: "progress-label"}, `${percent}%`));
}

function jobRow(job) {
  const open = () => { window.location.hash = `#/jobs/${job.id}`; };
  return el("tr", {class: "clickable", "data-job-id": job.id, onclick: open, tabindex: 0,
    onkeydown: (e) => { if (e.key === "Enter") open(); }},
  el("td", null, el("a", {href: `#/jobs/${job.id}`, class: "mono"}, job.id),
    job.user_provided_suffix ? el("div", {class: "muted small"}, job.user_provided_suffix) : null),
  // A failed job's reason on hover and under the badge: the list was the first place a failure went unexplained.
  el("td", {class: "job-status", title: job.error?.message || null}, statusBadge(job.status),
    job.status === "failed" && job.error?.message
      ? el("div", {class: "muted small ellipsis job-error"}, job.error.message) : null),
  el("td", null, el("span", {class: "chip"}, methodOf(job))),
  el("td", {class: "mono ellipsis", title: job.model}, job.model),
  el("td", {title: formatTime(job.created_at)}, formatAge(job.created_at)),
  el("td", {class: "progress-cell"}, progressBar(job),
    job.status === "running" && job.estimated_finish
      ? el("div", {class: "muted small eta", title: formatTime(job.estimated_finish)},
        formatRemaining(job.estimated_finish)) : null),
  el("td", {class: "muted"}, formatDuration(job.started_at ?? job.created_at, job.finished_at)));
}

/** The jobs view: {root, refresh, live} for the app's poller. */
export function jobsView() {
  const summary = el("div", {class: "summary"});
  const body = el("tbody");
  const table = el("table", {class: "table", id: "jobs-table"},
    el("thead", null, el("tr", null, ["Job", "Status", "Method", "Model", "Created", "Progress", "Duration"]
      .map((h) => el("th", null, h)))),
    body);
  const empty = el("div", {class: "empty", hidden: true},
    el("h3", null, "No jobs yet"),
    el("p", {class: "muted"}, "Submit one with the CLI, the REST API or any OpenAI fine-tuning client:"),
    el("pre", {class: "code"}, "alignd demo --url " + window.location.origin + " --api-key $ALIGND_API_KEY"));
  // The API pages at most 1000 jobs per call; the list grows by PAGE on request and polls that many.
  let limit = PAGE;
  const more = el("button", {class: "btn btn-ghost", type: "button", id: "jobs-more", hidden: true,
    onclick: async () => {
      limit = Math.min(limit + PAGE, MAX_LIMIT);
      more.disabled = true;
      try { await refresh(); } finally { more.disabled = false; }
    }}, `Show ${PAGE} more`);
  const root = el("div", null,
    el("div", {class: "page-head"}, el("h1", null, "Fine-tuning jobs"), summary),
    el("div", {class: "card card-scroll-x"}, table, empty), el("div", {class: "list-more"}, more));
  let jobs = [];

  async function refresh() {
    const page = await jobsApi.list({limit});
    jobs = page.data || [];
    replaceChildren(body, jobs.map(jobRow));
    empty.hidden = jobs.length > 0;
    table.hidden = jobs.length === 0;
    const counts = {};
    for (const job of jobs) counts[job.status] = (counts[job.status] || 0) + 1;
    replaceChildren(summary, Object.entries(counts).map(([status, n]) =>
      el("span", {class: "summary-item"}, statusBadge(status), el("b", null, n))),
    page.has_more ? el("span", {class: "muted small"}, `newest ${jobs.length} shown`) : null);
    more.hidden = !page.has_more || limit >= MAX_LIMIT;
  }

  return {root, refresh, live: () => jobs.some((j) => ACTIVE_STATUSES.has(j.status))};
}
