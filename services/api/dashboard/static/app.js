// The dashboard shell: API key dialog, hash router (#/jobs, #/jobs/<id>, #/pipelines, #/pipelines/<id>),
// a 2 s poller for views that are live, and toasts.

import {forgetKey, getKey, jobsApi, setKey} from "./api.js";
import {el, replaceChildren} from "./dom.js";
import {jobView} from "./job_view.js";
import {jobsView} from "./jobs_view.js";
import {pipelinesView, pipelineView} from "./pipelines_view.js";

const POLL_MS = 2000;

const viewRoot = document.getElementById("view");
const dialog = document.getElementById("key-dialog");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyError = document.getElementById("key-error");
const liveIndicator = document.getElementById("live-indicator");

let current = null; // {view, generation}
let generation = 0;
let inFlight = false;

function notify(message, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = el("div", {id: "toasts", class: "toasts"});
    document.body.append(box);
  }
  const toast = el("div", {class: `toast toast-${kind}`, role: "status"}, message);
  box.append(toast);
  setTimeout(() => toast.remove(), 4000);
}

function askForKey(message) {
  keyError.hidden = !message;
  keyError.textContent = message || "";
  keyInput.value = "";
  if (!dialog.open) dialog.showModal();
  keyInput.focus();
}

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  setKey(key);
  try {
    await jobsApi.list({limit: 1});
  } catch (err) {
    askForKey(err.status === 401 ? "This key was not accepted." : err.message);
    return;
  }
  dialog.close();
  route();
});
document.getElementById("key-forget").addEventListener("click", () => {
  forgetKey();
  askForKey("Key forgotten. Paste a key to continue.");
});
document.getElementById("change-key").addEventListener("click", () => askForKey(""));
dialog.addEventListener("cancel", (event) => {
  if (!getKey()) event.preventDefault(); // without a key there is nothing to show
});

function viewFor(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "jobs" && parts[1]) return {nav: "jobs", view: jobView(parts[1], notify)};
  if (parts[0] === "pipelines" && parts[1]) return {nav: "pipelines", view: pipelineView(parts[1])};
  if (parts[0] === "pipelines") return {nav: "pipelines", view: pipelinesView()};
  return {nav: "jobs", view: jobsView()};
}

async function refreshCurrent() {
  if (!current || inFlight) return;
  const mine = current;
  inFlight = true;
  try {
    await mine.view.refresh();
    if (mine === current) mine.errorBox.hidden = true;
  } catch (err) {
    if (mine !== current) return;
    if (err.status === 401) {
      askForKey("The server rejected the stored key. Paste a valid key.");
    } else {
      mine.errorBox.hidden = false;
      mine.errorBox.textContent = err.status === 404 ? `Not found: ${err.message}` : err.message;
    }
  } finally {
    inFlight = false;
    liveIndicator.hidden = !(current && current.view.live());
  }
}

function route() {
  const {nav, view} = viewFor(window.location.hash);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
  const errorBox = el("div", {class: "alert alert-error", hidden: true, role: "alert"});
  generation += 1;
  current = {view, errorBox, generation};
  replaceChildren(viewRoot, errorBox, view.root);
  inFlight = false;
  if (getKey()) refreshCurrent();
}

setInterval(() => {
  if (document.hidden || !current || !getKey() || dialog.open) return;
  if (current.view.live()) refreshCurrent();
}, POLL_MS);

window.addEventListener("hashchange", route);
if (!window.location.hash) window.history.replaceState(null, "", "#/jobs");
route();
if (!getKey()) askForKey("");
