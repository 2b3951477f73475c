"""The dashboard in headless Chromium against the real API (`alignd serve`, SQLite, temp ALIGND_HOME).

The job is created through the API and driven through the store's own queue functions (claim, record
metrics / checkpoint, acknowledge the cancel) exactly as a dispatcher would, so every number the page
shows came through the real server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN_KEY = "sk-dashboard-browser-test"
WORKER = "dashboard-test-worker"
FIRST_STEPS = 12
MORE_STEPS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, alignd_serve) -> Iterator[dict]:
    """`alignd serve` on a free loopback port with its own home; yields its URL and database URL."""
    home = tmp_path_factory.mktemp("dashboard-browser-home")
    env = {**os.environ, "ALIGND_HOME": str(home), "ALIGND_ADMIN_KEY": ADMIN_KEY}
    env.pop("ALIGND_DATABASE_URL", None)
    env.pop("ALIGND_STORAGE_URI", None)
    with alignd_serve(env, home / "serve.log", ready_timeout_s=40) as url:
        yield {"url": url, "database_url": f"sqlite:///{home / 'alignd.db'}", "home": home}


def _open_signed_in(page: Any, server: dict, route: str) -> None:
    """The dashboard at `#/route` with the admin key stored, as after pasting it into the key dialog."""
    page.goto(f"{server['url']}/dashboard")
    page.evaluate(f"localStorage.setItem('alignd.apiKey', '{ADMIN_KEY}')")
    page.goto(f"{server['url']}/dashboard#/{route}")
    page.reload()


def _create_and_claim(server: dict, running_job: dict, worker: str, **fields: Any) -> tuple[str, Any]:
    """A job created over HTTP on the fixture's SFT file, claimed by `worker` as a dispatcher would claim it."""
    from services.store import queue

    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server["url"], headers=headers, timeout=30) as client:
        created = client.post("/v1/fine_tuning/jobs", json={
            "model": "alignd-tiny", "training_file": running_job["sft_file"], "priority": 1000, **fields})
        assert created.status_code == 200, created.text
    job_id, sessions = created.json()["id"], running_job["sessions"]
    claimed = queue.claim_next_job(sessions, worker, lease_seconds=600)
    assert claimed is not None and claimed.id == job_id
    return job_id, sessions


@pytest.fixture(scope="module")
def running_job(server: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A supervised job created over HTTP, claimed by a pretend worker, with metrics and a checkpoint."""
    from services.store import queue
    from services.store.engine import make_engine, make_session_factory

    data = tmp_path_factory.mktemp("dashboard-data") / "sft.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"sort {w}"},
                                                     {"role": "assistant", "content": "".join(sorted(w))}]}) + "\n"
                            for w in ["dcba", "zyx", "hgfe", "qpo", "tsr", "wvu"]))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server["url"], headers=headers, timeout=30) as client:
        upload = client.post("/v1/files", data={"purpose": "fine-tune"},
                             files={"file": ("sft.jsonl", data.read_bytes(), "application/jsonl")})
        assert upload.status_code == 200, upload.text
        created = client.post("/v1/fine_tuning/jobs", json={
            "model": "alignd-tiny", "training_file": upload.json()["id"], "suffix": "dashboard",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}})
        assert created.status_code == 200, created.text
    job_id = created.json()["id"]

    sessions = make_session_factory(make_engine(server["database_url"]))
    claimed = queue.claim_next_job(sessions, WORKER, lease_seconds=600)
    assert claimed is not None and claimed.id == job_id
    for step in range(1, FIRST_STEPS + 1):
        queue.record_metrics(sessions, job_id, step, _metrics_at(step))
    queue.record_checkpoint(sessions, job_id, 10, str(server["home"] / "ckpt-10"), {"loss": _metrics_at(10)["loss"]})
    return {"id": job_id, "sessions": sessions, "attempt": claimed.attempt, "sft_file": upload.json()["id"]}


@pytest.fixture(scope="module")
def pipeline(server: dict, running_job: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An SFT -> DPO pipeline created over HTTP (created after the job above was claimed, so it waits)."""
    data = tmp_path_factory.mktemp("dashboard-pref") / "pref.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"sort {w}", "chosen": "".join(sorted(w)), "rejected": w}) + "\n"
                            for w in ["dcba", "zyx", "hgfe", "qpo", "tsr", "wvu"]))
    with httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as client:
        upload = client.post("/v1/files", data={"purpose": "fine-tune"},
                             files={"file": ("pref.jsonl", data.read_bytes(), "application/jsonl")})
        assert upload.status_code == 200, upload.text
        created = client.post("/v1/pipelines", json={"name": "sft-then-dpo", "model": "alignd-tiny", "stages": [
            {"method": "supervised", "training_file": running_job["sft_file"]},
            {"method": "dpo", "training_file": upload.json()["id"]}]})
        assert created.status_code == 200, created.text
    return created.json()


@contextmanager
def _chromium_page(tmp_path: Path, viewport: dict[str, int] | None = None) -> Iterator[Any]:
    """A page in headless Debian Chromium with its own profile under `tmp_path`; closed on the way out."""
    from playwright.sync_api import sync_playwright

    options = {"viewport": viewport} if viewport else {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            **options)
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            yield page
        finally:
            browser.close()


def _screenshot(page, path: Path) -> None:
    """Save a full-page PNG; copy it to $ALIGND_SCREENSHOT_DIR when set, to look at the page by eye."""
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("ALIGND_SCREENSHOT_DIR"):
        shutil.copy(path, os.environ["ALIGND_SCREENSHOT_DIR"])


def _metrics_at(step: int) -> dict[str, float]:
    return {"loss": 2.5 / (1 + 0.3 * step), "learning_rate": 1e-4 * (1 - step / 40), "grad_norm": 1.0 + 0.1 * step}


def test_dashboard_shows_live_curves_and_cancels_a_job(server: dict, running_job: dict, pipeline: dict,
                                                       tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from services.store import queue

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    job_id, sessions = running_job["id"], running_job["sessions"]
    with _chromium_page(tmp_path, viewport={"width": 1360, "height": 1100}) as page:
        page.on("dialog", lambda dialog: dialog.accept())  # the cancel confirmation
        page.goto(f"{server['url']}/")  # the redirect lands on the dashboard

        # A wrong key is refused and the dialog stays; the right one is kept in localStorage.
        expect(page.locator("#key-dialog")).to_be_visible()
        page.fill("#key-input", "sk-wrong")
        page.click("#key-save")
        expect(page.locator("#key-error")).to_contain_text("not accepted")
        page.fill("#key-input", ADMIN_KEY)
        page.click("#key-save")
        expect(page.locator("#key-dialog")).to_be_hidden()
        assert page.evaluate("localStorage.getItem('alignd.apiKey')") == ADMIN_KEY

        row = page.locator(f"tr[data-job-id='{job_id}']")
        expect(row.locator(".job-status")).to_have_text("running")
        expect(row).to_contain_text("supervised")
        expect(row).to_contain_text("alignd-tiny")
        row.click()

        loss_line = page.locator("[data-chart='Loss'] polyline[data-series='loss']")
        expect(loss_line).to_have_attribute("data-points", str(FIRST_STEPS))
        assert len(loss_line.get_attribute("points").split()) == FIRST_STEPS
        expect(page.locator("[data-chart='Learning rate'] polyline")).to_have_attribute(
            "data-points", str(FIRST_STEPS))
        expect(page.locator("#checkpoints")).to_contain_text("ckpt-step-10")
        expect(page.locator("#events")).to_contain_text("Checkpoint saved at step 10")

        # Steps reported while the page is open appear through the 2 s poll, without a reload.
        for step in range(FIRST_STEPS + 1, FIRST_STEPS + MORE_STEPS + 1):
            queue.record_metrics(sessions, job_id, step, _metrics_at(step))
        expect(loss_line).to_have_attribute("data-points", str(FIRST_STEPS + MORE_STEPS))
        expect(page.locator("#live-indicator")).to_be_visible()
        _screenshot(page, tmp_path / "dashboard-job.png")

        # Cancel: the API flags the running job, the worker acknowledges, the page follows.
        page.click("#action-cancel")
        expect(page.locator("#job-status")).to_contain_text("cancel requested")
        expect(page.locator("#action-cancel")).to_be_disabled()
        flags = queue.renew_lease(sessions, job_id, WORKER, running_job["attempt"], 600)
        assert flags.cancel_requested
        queue.mark_cancelled(sessions, job_id, WORKER)
        expect(page.locator("#job-status .badge")).to_have_text("cancelled")
        expect(page.locator("#action-cancel")).to_be_disabled()
        expect(page.locator("#action-resume")).to_be_disabled()

        page.click("a[href='#/jobs']")
        expect(page.locator(f"tr[data-job-id='{job_id}'] .job-status")).to_have_text("cancelled")
        _screenshot(page, tmp_path / "dashboard-jobs.png")

        # Pipelines: listed (gathered from the jobs), and one shows its stages in order.
        page.click("a[data-nav='pipelines']")
        page.click(f"#pipelines-table a[href='#/pipelines/{pipeline['id']}']")
        stages = page.locator(".stage-card")
        expect(stages).to_have_count(2)
        expect(stages.nth(0)).to_contain_text("supervised")
        expect(stages.nth(1)).to_contain_text("dpo")
        expect(stages.nth(1)).to_contain_text(f"from ft:alignd-tiny:{pipeline['job_ids'][0]}")
        expect(page.locator(".page-head")).to_contain_text("sft-then-dpo")
        _screenshot(page, tmp_path / "dashboard-pipeline.png")
        stages.nth(1).click()
        expect(page.locator("#job-status .badge")).to_have_text("queued")
        expect(page.locator("#charts")).to_contain_text("No metrics reported yet")


def test_dashboard_fits_the_window_and_stops_polling_an_unknown_job(server: dict, running_job: dict,
                                                                    tmp_path: Path) -> None:
    """A real SFT checkpoint's many metric columns scroll inside their card (the page keeps the window's width);
    the trainer's end-of-run train_loss is not drawn as a curve; an unknown job id is asked for once."""
    from playwright.sync_api import expect

    from services.store import queue

    job_id, sessions = _create_and_claim(server, running_job, "layout-test-worker")
    for step in range(1, 6):
        queue.record_metrics(sessions, job_id, step, _metrics_at(step))
    queue.record_metrics(sessions, job_id, 5, {"train_loss": 9.0, "train_runtime": 3.0})
    wide = {"loss": 1.5, "train_mean_token_accuracy": 0.25, "valid_loss": 1.7, "entropy": 6.1, "grad_norm": 2.0}
    queue.record_checkpoint(sessions, job_id, 5, "/tmp/ft:alignd-tiny:" + "x" * 60, wide)

    with _chromium_page(tmp_path, viewport={"width": 1280, "height": 900}) as page:
        _open_signed_in(page, server, f"jobs/{job_id}")
        expect(page.locator("#checkpoints")).to_contain_text("ckpt-step-5")
        loss_line = page.locator("[data-chart='Loss'] polyline[data-series='loss']")
        expect(loss_line).to_have_attribute("data-points", "5")
        expect(page.locator("polyline[data-series='train_loss']")).to_have_count(0)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        _screenshot(page, tmp_path / "dashboard-wide-checkpoints.png")
        # A phone-sized window: the title wraps, the tables scroll inside their cards.
        page.set_viewport_size({"width": 420, "height": 900})
        expect(page.locator("#checkpoints")).to_contain_text("ckpt-step-5")
        assert page.evaluate("document.documentElement.scrollWidth") <= 420
        page.goto(f"{server['url']}/dashboard#/jobs")
        expect(page.locator(f"tr[data-job-id='{job_id}']")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 420
        page.set_viewport_size({"width": 1280, "height": 900})

        missing = []
        page.on("request", lambda request: missing.append(request.url) if "nosuchjob" in request.url else None)
        page.goto(f"{server['url']}/dashboard#/jobs/ftjob-nosuchjob")
        expect(page.locator(".alert-error")).to_contain_text("Not found")
        page.wait_for_timeout(5000)  # two poll intervals and more
        assert len(missing) == 4, missing  # one round: the job, its metrics, events and checkpoints
        page.goto(f"{server['url']}/dashboard#/pipelines/pipe-nosuchjob")
        expect(page.locator(".alert-error")).to_contain_text("Not found")
        page.wait_for_timeout(5000)
        assert len(missing) == 5, missing


def test_jobs_list_shows_more_than_a_page_on_request(server: dict, running_job: dict, tmp_path: Path) -> None:
    """Past 100 jobs the list says so and a button shows the next hundred (oldest jobs stay reachable)."""
    from playwright.sync_api import expect

    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server["url"], headers=headers, timeout=30) as client:
        for index in range(101):
            created = client.post("/v1/fine_tuning/jobs", json={
                "model": "alignd-tiny", "training_file": running_job["sft_file"], "suffix": f"bulk-{index}"})
            assert created.status_code == 200, created.text
        total = len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"])
    assert 100 < total <= 200

    with _chromium_page(tmp_path) as page:
        page.goto(f"{server['url']}/dashboard")
        page.fill("#key-input", f"Bearer {ADMIN_KEY}")  # as copied from a curl command
        page.click("#key-save")
        expect(page.locator("#key-dialog")).to_be_hidden()
        rows = page.locator("#jobs-table tbody tr")
        expect(rows).to_have_count(100)
        expect(page.locator(".summary")).to_contain_text("newest 100 shown")
        page.click("#jobs-more")
        expect(rows).to_have_count(total)
        expect(page.locator("#jobs-more")).to_be_hidden()
        expect(page.locator(f"tr[data-job-id='{running_job['id']}']")).to_have_count(1)  # the oldest job


def test_api_docs_render_without_internet(server: dict, tmp_path: Path) -> None:
    """/docs draws the operations from the package's Swagger UI: every request off this host is refused."""
    from playwright.sync_api import expect

    outside: list[str] = []

    def loopback_only(route) -> None:
        if route.request.url.startswith(server["url"]):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with _chromium_page(tmp_path) as page:
        page.route("**/*", loopback_only)
        page.goto(f"{server['url']}/docs")
        expect(page.locator(".opblock-summary-path", has_text="/v1/fine_tuning/jobs").first).to_be_visible()
    assert outside == []


def test_a_long_noisy_curve_gets_a_smoothed_line_over_the_faint_raw_one(server: dict, running_job: dict,
                                                                        tmp_path: Path) -> None:
    """Per-step losses of a small batch zigzag; past 200 points a centred average is drawn over them (the raw
    series stays, faint, and keeps its data-points count)."""
    from playwright.sync_api import expect

    from services.store import queue

    job_id, sessions = _create_and_claim(server, running_job, "smoothing-test-worker")
    steps = 400
    for step in range(1, steps + 1):
        queue.record_metrics(sessions, job_id, step, {"loss": 2.0 / (1 + 0.01 * step) + (0.5 if step % 2 else -0.5)})

    def zigzag(points: str) -> float:
        ys = [float(point.split(",")[1]) for point in points.split()]
        return sum(abs(b - a) for a, b in zip(ys, ys[1:]))

    with _chromium_page(tmp_path) as page:
        _open_signed_in(page, server, f"jobs/{job_id}")
        raw = page.locator("[data-chart='Loss'] polyline[data-series='loss']")
        smooth = page.locator("[data-chart='Loss'] polyline[data-smoothed='loss']")
        expect(raw).to_have_attribute("data-points", str(steps))
        expect(smooth).to_have_attribute("data-points", str(steps))
        expect(raw).to_have_class("line line-raw")
        raw_zigzag, smooth_zigzag = zigzag(raw.get_attribute("points")), zigzag(smooth.get_attribute("points"))
        assert smooth_zigzag < raw_zigzag / 8, (smooth_zigzag, raw_zigzag)
        _screenshot(page, tmp_path / "dashboard-smoothed.png")


def test_the_key_dialog_says_where_a_key_comes_from(server: dict, tmp_path: Path) -> None:
    """A new user who closed the terminal of `alignd up` learns from the page where the key is kept."""
    from playwright.sync_api import expect

    with _chromium_page(tmp_path) as page:
        page.goto(f"{server['url']}/dashboard")
        expect(page.locator("#key-dialog")).to_be_visible()
        where = page.locator("#key-where")
        expect(where).to_contain_text("alignd up")
        expect(where).to_contain_text("~/.alignd/admin_key")
        expect(where).to_contain_text("alignd keys create --project NAME")


def test_a_job_links_the_jobs_it_depends_on_and_names_its_reward(server: dict, running_job: dict, pipeline: dict,
                                                                 tmp_path: Path) -> None:
    """A queued chained job said why it waited only in its first event, and its base model was plain text."""
    from playwright.sync_api import expect

    sft_id, dpo_id = pipeline["job_ids"]
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server["url"], headers=headers, timeout=30) as client:
        created = client.post("/v1/fine_tuning/jobs", json={
            "model": sft_id, "training_file": running_job["sft_file"],
            "method": {"type": "ppo", "ppo": {"reward": {"type": "function", "function": "demo_sort"}}}})
        assert created.status_code == 200, created.text
    ppo_id = created.json()["id"]

    with _chromium_page(tmp_path) as page:
        _open_signed_in(page, server, f"jobs/{ppo_id}")
        expect(page.locator(".fact", has_text="Reward")).to_contain_text("function: demo_sort")
        expect(page.locator("#depends-on a")).to_have_attribute("href", f"#/jobs/{sft_id}")

        page.goto(f"{server['url']}/dashboard#/jobs/{dpo_id}")
        expect(page.locator("#depends-on a")).to_have_text(sft_id)
        base = page.locator(".fact", has_text="Base model").locator("a")
        expect(base).to_have_attribute("href", f"#/jobs/{sft_id}")
        base.click()
        expect(page.locator("h1")).to_contain_text(sft_id)
        expect(page.locator("#depends-on")).to_have_count(0)  # the first stage depends on nothing


def test_the_jobs_list_says_why_a_job_failed(server: dict, running_job: dict, tmp_path: Path) -> None:
    """A failed row showed only 'failed': the reason was one click away, on each job in turn."""
    from playwright.sync_api import expect

    from services.store import queue

    job_id, sessions = _create_and_claim(server, running_job, "failing-test-worker")
    reason = "OSError: no model named 'nonexistent-org/nonexistent-model' in the cache"
    queue.fail_job(sessions, job_id, "failing-test-worker", reason, attempt=1)

    with _chromium_page(tmp_path) as page:
        _open_signed_in(page, server, "jobs")
        status = page.locator(f"tr[data-job-id='{job_id}'] .job-status")
        expect(status.locator(".badge")).to_have_text("failed")
        expect(status.locator(".job-error")).to_have_text(reason)
        expect(status).to_have_attribute("title", reason)


def test_a_validation_files_bookkeeping_is_not_drawn_as_curves(server: dict, running_job: dict,
                                                               tmp_path: Path) -> None:
    """A job with a validation file logs eval_runtime and eval_num_tokens (names from a real SFT run): they were
    drawn under "More metrics" as if they were curves to watch, unlike their training twins."""
    from playwright.sync_api import expect

    from services.store import queue

    job_id, sessions = _create_and_claim(server, running_job, "eval-test-worker")
    for step in range(1, 4):
        queue.record_metrics(sessions, job_id, step, {"loss": 2.0 / step, "num_tokens": 13.0 * step})
        queue.record_metrics(sessions, job_id, step, {
            "eval_loss": 2.2 / step, "eval_mean_token_accuracy": 0.2 * step, "eval_runtime": 0.05,
            "eval_num_tokens": 13.0 * step, "eval_samples_per_second": 200.0, "eval_steps_per_second": 20.0})

    with _chromium_page(tmp_path) as page:
        _open_signed_in(page, server, f"jobs/{job_id}")
        expect(page.locator("[data-chart='Loss'] polyline[data-series='eval_loss']")).to_have_attribute(
            "data-points", "3")
        expect(page.locator(".more-metrics summary")).to_have_text("More metrics (1)")  # eval_mean_token_accuracy
        for hidden in ("eval_runtime", "eval_num_tokens", "num_tokens"):
            expect(page.locator(f"polyline[data-series='{hidden}']")).to_have_count(0)


def test_ppo_kl_chart_holds_divergences_not_the_penalty_weight(server: dict, running_job: dict,
                                                               tmp_path: Path) -> None:
    """PPO logs kl, approx_kl and kl_coef (names from a real PPO run); the coefficient is not a KL."""
    from playwright.sync_api import expect

    from services.store import queue

    ppo = {"type": "ppo", "ppo": {"reward": {"type": "function", "function": "demo_sort"}}}
    job_id, sessions = _create_and_claim(server, running_job, "ppo-test-worker", method=ppo)
    for step in range(1, 4):
        queue.record_metrics(sessions, job_id, step, {"reward_mean": 0.5 + 0.01 * step, "kl": 0.01 * step,
                                                      "approx_kl": 0.001 * step, "kl_coef": 0.05})

    with _chromium_page(tmp_path) as page:
        _open_signed_in(page, server, f"jobs/{job_id}")
        kl_chart = page.locator("[data-chart='KL']")
        expect(kl_chart.locator("polyline")).to_have_count(2)
        expect(kl_chart.locator("polyline[data-series='kl_coef']")).to_have_count(0)
        expect(page.locator("[data-chart='kl_coef'] polyline")).to_have_count(1)  # under More metrics


def test_a_running_epoch_based_job_shows_its_progress_and_time_left(server: dict, running_job: dict,
                                                                    tmp_path: Path) -> None:
    """An OpenAI-style job (n_epochs, no max_steps) had an indeterminate bar everywhere; with the run's total steps
    and estimated finish (as the dispatcher records them) the job shows a % and both views the time left."""
    from playwright.sync_api import expect

    from services.store import queue

    epochs = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4}}}
    job_id, sessions = _create_and_claim(server, running_job, "progress-test-worker", method=epochs)
    queue.record_progress(sessions, job_id, 200, time.time() + 9 * 60)
    for step in range(1, 51):
        queue.record_metrics(sessions, job_id, step, _metrics_at(step))

    with _chromium_page(tmp_path) as page:
        _open_signed_in(page, server, "jobs")
        expect(page.locator(f"tr[data-job-id='{job_id}'] .eta")).to_have_text(re.compile(r"about (8|9) min left"))
        page.goto(f"{server['url']}/dashboard#/jobs/{job_id}")
        expect(page.locator(".fact", has_text="Progress")).to_contain_text("25%")
        expect(page.locator("#eta")).to_contain_text("min left")
