// Turns metric rows ({step, metrics: {name: value}}) into the dashboard's chart groups.

// Order matters: "rewards/kl" is a KL curve, "learning_rate" is not a loss, and so on.
const GROUPS = [
  {title: "Learning rate", match: (n) => /(^|[/_])(lr|learning_rate)$/.test(n)},
  // kl_coef is the penalty's weight, not a divergence: a flat line there squeezed the KL curves.
  {title: "KL", match: (n) => /(^|[/_])kl($|[/_])|kl_div|kl_penalty/.test(n) && !/coef/.test(n)},
  {title: "Reward", match: (n) => /reward|score|margin/.test(n) && !/acc/.test(n)},
  {title: "Loss", match: (n) => /loss/.test(n)},
];
// Bookkeeping values that are not curves anyone watches. "train_loss" is the trainer's end-of-run average
// (one value per attempt): drawn next to "loss" it looks like a second, smoother curve.
// The evaluation's own bookkeeping (eval_runtime, eval_num_tokens) is hidden like the training's.
const HIDDEN = /^(epoch|step|global_step|total_flos|train_runtime|train_loss|.*_per_second|(eval_)?(runtime|num_tokens)|tokens)$/;

/** Store rows keyed by step; a later report for the same step merges into it. */
export class MetricSeries {
  constructor() {
    this.byStep = new Map();
  }

  add(rows) {
    for (const row of rows) {
      const current = this.byStep.get(row.step) || {};
      this.byStep.set(row.step, {...current, ...row.metrics});
    }
  }

  get lastStep() {
    let last;
    for (const step of this.byStep.keys()) if (last === undefined || step > last) last = step;
    return last;
  }

  get size() {
    return this.byStep.size;
  }

  names() {
    const names = new Set();
    for (const metrics of this.byStep.values()) for (const name of Object.keys(metrics)) names.add(name);
    return [...names].filter((n) => !HIDDEN.test(n)).sort();
  }

  points(name) {
    return [...this.byStep.entries()]
      .filter(([, m]) => typeof m[name] === "number")
      .sort((a, b) => a[0] - b[0])
      .map(([step, m]) => [step, m[name]]);
  }

  /** [{title, names}] for the four main charts that have data, then one chart per other metric. */
  groups() {
    const placed = new Map(GROUPS.map((g) => [g.title, []]));
    const others = [];
    for (const name of this.names()) {
      const group = GROUPS.find((g) => g.match(name.toLowerCase()));
      if (group) placed.get(group.title).push(name);
      else others.push(name);
    }
    const main = ["Loss", "Reward", "KL", "Learning rate"]
      .map((title) => ({title, names: placed.get(title)}))
      .filter((g) => g.names.length > 0);
    return {main, others: others.map((name) => ({title: name, names: [name]}))};
  }
}
