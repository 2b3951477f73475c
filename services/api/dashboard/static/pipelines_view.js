// Pipelines: chains of jobs (SFT -> RM -> PPO, SFT -> DPO); a pipeline shows its stages in order.

import {jobsApi, pipelinesApi} from "./api.js";
import {ACTIVE_STATUSES, el, formatAge, formatTime, replaceChildren, statusBadge} from "./dom.js";
import {methodOf, progressBar} from "./jobs_view.js";

function jobIdsOf(pipeline) {
  if (Array.isArray(pipeline.job_ids)) return pipeline.job_ids;
  if (Array.isArray(pipeline.jobs)) return pipeline.jobs.map((j) => (typeof j === "string" ? j : j.id));
  return [];
}

function pipelineStatus(pipeline, jobs) {
  if (pipeline.status) return pipeline.status;
  const statuses = jobs.map((j) => j.status);
  if (statuses.some((s) => s === "failed")) return "failed";
  if (statuses.some((s) => s === "cancelled")) return "cancelled";
  if (statuses.length && statuses.every((s) => s === "succeeded")) return "succeeded";
  if (statuses.some((s) => s === "running")) return "running";
  return statuses[0] || "queued";
}

/** The pipelines list: {root, refresh, live}. */
export function pipelinesView() {
  const body = el("div");
  const root = el("div", null, el("div", {class: "page-head"}, el("h1", null, "Pipelines")), body);
  let live = false;

  async function refresh() {
    let pipelines;
    try {
      pipelines = (await pipelinesApi.list()).data || [];
    } catch (err) {
      if (err.status !== 404 && err.status !== 405) throw err;
      // No list endpoint on this server: gather pipeline ids from the jobs instead.
      const jobs = (await jobsApi.list()).data || [];
      const ids = [...new Set(jobs.map((j) => j.pipeline_id).filter(Boolean))];
      pipelines = await Promise.all(ids.map((id) => pipelinesApi.get(id)));
    }
    live = pipelines.some((p) => ACTIVE_STATUSES.has(p.status));
    if (pipelines.length === 0) {
      replaceChildren(body, el("div", {class: "card empty"}, el("h3", null, "No pipelines yet"),
        el("p", {class: "muted"}, "POST /v1/pipelines creates a chain of jobs (SFT → RM → PPO, SFT → DPO).")));
      return;
    }
    replaceChildren(body, el("div", {class: "card card-scroll-x"}, el("table", {class: "table", id: "pipelines-table"},
      el("thead", null, el("tr", null, ["Pipeline", "Name", "Status", "Stages", "Created"].map((h) => el("th", null, h)))),
      el("tbody", null, pipelines.map((p) => {
        const open = () => { window.location.hash = `#/pipelines/${p.id}`; };
        return el("tr", {class: "clickable", onclick: open},
          el("td", null, el("a", {href: `#/pipelines/${p.id}`, class: "mono"}, p.id)),
          el("td", null, p.name || "—"),
          el("td", null, p.status ? statusBadge(p.status) : "—"),
          el("td", null, jobIdsOf(p).length),
          el("td", {title: formatTime(p.created_at)}, formatAge(p.created_at)));
      })))));
  }

  return {root, refresh, live: () => live};
}

/** One pipeline: its stages as a chain of job cards. */
export function pipelineView(pipelineId) {
  const head = el("div", {class: "title-row"}, el("h1", {class: "mono"}, pipelineId));
  const chain = el("div", {class: "pipeline-chain"});
  const root = el("div", null,
    el("nav", {class: "crumbs"}, el("a", {href: "#/pipelines"}, "Pipelines"), " / ",
      el("span", {class: "mono"}, pipelineId)),
    el("div", {class: "page-head"}, head), chain);
  let jobs = [];
  let missing = false; // a 404: nothing will appear, so the poller stops asking

  async function refresh() {
    let pipeline;
    try {
      pipeline = await pipelinesApi.get(pipelineId);
    } catch (err) {
      missing = err.status === 404;
      throw err;
    }
    const embedded = Array.isArray(pipeline.jobs) && pipeline.jobs.every((j) => typeof j === "object");
    jobs = embedded ? pipeline.jobs : await Promise.all(jobIdsOf(pipeline).map((id) => jobsApi.get(id)));
    replaceChildren(head, el("h1", {class: "mono"}, pipeline.name || pipelineId),
      statusBadge(pipelineStatus(pipeline, jobs)));
    const cards = [];
    jobs.forEach((job, index) => {
      if (index > 0) cards.push(el("div", {class: "chain-arrow", "aria-hidden": "true"}, "→"));
      cards.push(el("a", {class: "card stage-card", href: `#/jobs/${job.id}`},
        el("div", {class: "stage-head"}, el("span", {class: "chip"}, methodOf(job)), statusBadge(job.status)),
        el("div", {class: "mono small ellipsis"}, job.id),
        el("div", {class: "muted small ellipsis", title: job.model}, `from ${job.model}`),
        progressBar(job)));
    });
    replaceChildren(chain, cards);
  }

  return {root, refresh,
    live: () => !missing && (jobs.length === 0 || jobs.some((j) => ACTIVE_STATUSES.has(j.status)))};
}
