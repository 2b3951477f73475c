// One job: its facts, actions (cancel / pause / resume), metric curves, events and checkpoints.

import {jobsApi} from "./api.js";
import {lineChart} from "./chart.js";
import {
  ACTIVE_STATUSES, el, formatCount, formatDuration, formatNumber, formatRemaining, formatTime, replaceChildren,
  statusBadge,
} from "./dom.js";
import {methodOf, progressBar} from "./jobs_view.js";
import {MetricSeries} from "./metrics.js";

const ACTIONS = [
  {name: "pause", label: "Pause", allowed: ["queued", "running"], style: "btn"},
  {name: "resume", label: "Resume", allowed: ["paused"], style: "btn"},
  {name: "cancel", label: "Cancel", allowed: ["validating_files", "queued", "running", "paused"], style: "btn btn-danger",
    confirm: "Cancel this job? The last checkpoint is kept."},
];

function fact(label, value) {
  return el("div", {class: "fact"}, el("dt", null, label), el("dd", null, value ?? "—"));
}

/** The job a model name comes from ("ftjob-…" or "ft:<base>:…:ftjob-…"), or null for a hub id / folder. */
export function sourceJob(model) {
  if (typeof model !== "string") return null;
  const match = model.match(/^(ftjob-[0-9a-f]+)$/) || model.match(/^ft:.*:(ftjob-[0-9a-f]+)(?::ckpt-step-\d+)?$/);
  return match ? match[1] : null;
}

/** A model name, linked to the job that makes it when it is one of this project's jobs' outputs. */
function modelLink(model) {
  const source = sourceJob(model);
  return source ? el("a", {href: `#/jobs/${source}`, class: "mono", title: model}, model)
    : el("span", {class: "mono", title: model}, model);
}

/** A PPO job's reward source: a reward-model job (linked), a function or an HTTP scorer. */
function rewardSource(job) {
  const reward = job.spec && job.spec.method && job.spec.method.reward;
  if (!reward) return null;
  if (reward.model) return modelLink(reward.model);
  return el("span", {class: "mono"}, `${reward.type}: ${reward.function || reward.url || reward.application}`);
}

function facts(job, metrics) {
  const pipeline = job.pipeline_id
    ? el("a", {href: `#/pipelines/${job.pipeline_id}`, class: "mono"}, job.pipeline_id) : "—";
  const lastStep = metrics.lastStep;
  const dependsOn = job.depends_on || [];
  const reward = rewardSource(job);
  return el("dl", {class: "facts"},
    fact("Method", el("span", {class: "chip"}, methodOf(job))),
    fact("Base model", modelLink(job.model)),
    fact("Fine-tuned model", job.fine_tuned_model ? el("span", {class: "mono"}, job.fine_tuned_model) : "—"),
    fact("Pipeline", pipeline),
    reward ? fact("Reward", reward) : null,
    // A queued job that waits for others says so here, not only in its first event.
    dependsOn.length ? fact("Depends on", el("span", {id: "depends-on", title: dependsOn.join(", ")},
      dependsOn.map((id, i) => [i ? ", " : null, el("a", {href: `#/jobs/${id}`, class: "mono"}, id)]))) : null,
    fact("Training file", job.training_file ? el("span", {class: "mono"}, job.training_file) : "—"),
    fact("Created", formatTime(job.created_at)),
    job.status === "running" && job.estimated_finish
      ? fact("Estimated finish", el("span", {id: "eta"}, `${formatTime(job.estimated_finish)} (` +
        `${formatRemaining(job.estimated_finish)})`))
      : fact("Finished", formatTime(job.finished_at)),
    fact("Duration", formatDuration(job.started_at ?? job.created_at, job.finished_at)),
    fact("Step", lastStep === undefined ? "—" : formatCount(lastStep)),
    fact("Trained tokens", formatCount(job.trained_tokens)),
    fact("Seed", job.seed ?? "—"),
    fact("Progress", progressBar(job, lastStep)));
}

function errorPanel(job) {
  if (!job.error || !job.error.message) return null;
  return el("div", {class: "alert alert-error", id: "job-error", role: "alert"},
    el("b", null, job.error.code ? `${job.error.code}: ` : "Error: "),
    el("span", null, job.error.message),
    job.error.param ? el("span", {class: "muted"}, ` (param: ${job.error.param})`) : null);
}

function eventsList(events) {
  if (events.length === 0) return el("div", {class: "empty-small"}, "No events yet");
  return el("ol", {class: "events", id: "events"}, events.map((e) =>
    el("li", {class: `event event-${e.level || "info"}`},
      el("time", {class: "muted mono"}, formatTime(e.created_at)),
      el("span", {class: "event-level"}, e.level || "info"),
      el("span", {class: "event-message"}, e.message))));
}

function checkpointsTable(checkpoints) {
  if (checkpoints.length === 0) return el("div", {class: "empty-small"}, "No checkpoints yet");
  // "step" is already its own column.
  const names = [...new Set(checkpoints.flatMap((c) => Object.keys(c.metrics || {})))]
    .filter((n) => n !== "step").slice(0, 3);
  return el("table", {class: "table table-compact", id: "checkpoints"},
    el("thead", null, el("tr", null, el("th", null, "Step"), el("th", null, "Checkpoint"),
      names.map((n) => el("th", null, n)), el("th", null, "Saved"))),
    el("tbody", null, checkpoints.map((c) => el("tr", null,
      el("td", null, formatCount(c.step_number ?? c.step)),
      el("td", {class: "mono ellipsis", title: c.fine_tuned_model_checkpoint || c.id},
        c.fine_tuned_model_checkpoint || c.id),
      names.map((n) => el("td", null, formatNumber((c.metrics || {})[n]))),
      el("td", {class: "muted nowrap"}, formatTime(c.created_at))))));
}

function charts(metrics) {
  if (metrics.size === 0) {
    return el("div", {class: "card empty-small"}, "No metrics reported yet");
  }
  const {main, others} = metrics.groups();
  const draw = (g) => lineChart(g.title, g.names.map((name) => ({name, points: metrics.points(name)})));
  return el("div", null,
    el("div", {class: "charts"}, main.map(draw)),
    others.length ? el("details", {class: "more-metrics"},
      el("summary", null, `More metrics (${others.length})`),
      el("div", {class: "charts charts-small"}, others.map(draw))) : null);
}

/** The job view: {root, refresh, live} for the app's poller; notify(message, kind) shows toasts. */
export function jobView(jobId, notify) {
  const metrics = new MetricSeries();
  let job = null;
  let metricsSignature = "";
  let busy = false;
  let missing = false; // a 404: nothing will appear, so the poller stops asking

  const title = el("h1", {class: "mono"}, jobId);
  const badge = el("span", {id: "job-status"});
  const actions = el("div", {class: "actions"});
  const error = el("div");
  const factsBox = el("div", {class: "card"});
  const chartsBox = el("div", {id: "charts"});
  const eventsBox = el("div", {class: "card-body scroll"});
  const checkpointsBox = el("div", {class: "card-body scroll"});
  const root = el("div", null,
    el("nav", {class: "crumbs"}, el("a", {href: "#/jobs"}, "Jobs"), " / ", el("span", {class: "mono"}, jobId)),
    el("div", {class: "page-head"}, el("div", {class: "title-row"}, title, badge), actions),
    error, factsBox,
    el("h2", {class: "section-title"}, "Training curves"), chartsBox,
    el("div", {class: "two-col"},
      el("section", {class: "card"}, el("h2", {class: "card-title"}, "Events"), eventsBox),
      el("section", {class: "card"}, el("h2", {class: "card-title"}, "Checkpoints"), checkpointsBox)));

  async function act(action) {
    if (action.confirm && !window.confirm(action.confirm)) return;
    busy = true;
    renderActions();
    try {
      job = await jobsApi.action(jobId, action.name);
      notify(`${action.label} requested`, "ok");
    } catch (err) {
      notify(`${action.label} failed: ${err.message}`, "error");
    } finally {
      busy = false;
    }
    await refresh();
  }

  function renderActions() {
    replaceChildren(actions, ACTIONS.map((a) => el("button", {
      class: a.style, type: "button", id: `action-${a.name}`,
      disabled: busy || !job || !a.allowed.includes(job.status) || (a.name !== "resume" && job.cancel_requested),
      onclick: () => act(a),
    }, a.label)));
  }

  async function refresh() {
    const after = metrics.lastStep === undefined ? undefined : metrics.lastStep - 1;
    let fresh, rows, events, checkpoints;
    try {
      [fresh, rows, events, checkpoints] = await Promise.all([
        jobsApi.get(jobId), jobsApi.metrics(jobId, after), jobsApi.events(jobId), jobsApi.checkpoints(jobId),
      ]);
    } catch (err) {
      missing = err.status === 404;
      throw err;
    }
    job = fresh;
    metrics.add(rows);
    if (job.user_provided_suffix) title.textContent = `${jobId} · ${job.user_provided_suffix}`;
    // A running job stops at its worker's next heartbeat; until then say that the request is pending.
    const pending = ACTIVE_STATUSES.has(job.status) &&
      (job.cancel_requested ? "cancel requested" : job.pause_requested ? "pause requested" : null);
    replaceChildren(badge, statusBadge(job.status), pending ? el("span", {class: "pending-note"}, pending) : null);
    renderActions();
    replaceChildren(error, errorPanel(job));
    replaceChildren(factsBox, facts(job, metrics));
    // Redraw curves only when a point changed, so hovering a chart is not interrupted every poll.
    const last = metrics.lastStep;
    const signature = `${metrics.size}:${last}:${JSON.stringify(metrics.byStep.get(last) || {})}`;
    if (signature !== metricsSignature) {
      metricsSignature = signature;
      replaceChildren(chartsBox, charts(metrics));
    }
    replaceChildren(eventsBox, eventsList(events.data || []));
    replaceChildren(checkpointsBox, checkpointsTable(checkpoints.data || []));
  }

  return {root, refresh, live: () => !missing && (!job || ACTIVE_STATUSES.has(job.status))};
}
