"""What the libraries under alignd may print on a CLI run: their errors, not their start-up notes.

A new user reads bitsandbytes' "Failed to load CPU gemm_4bit_forward", DeepSpeed's "Setting accelerator to CPU",
transformers' load report of a reward model's new score head and deprecation warnings aimed at library authors
as failures of their run. alignd's own logs, the libraries' errors and their other warnings still show;
`alignd --verbose` (or ALIGND_VERBOSE=1) leaves every library as it is.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

# Whose FutureWarning / DeprecationWarning are for their callers' authors (us), not for a user of the CLI.
LIBRARY_PACKAGES = ("transformers", "trl", "peft", "accelerate", "datasets", "torch", "deepspeed", "bitsandbytes",
                    "huggingface_hub", "ray")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_quieted = False


def quiet_library_logs() -> None:
    """Call before the libraries are imported: some log their notes at import time."""
    global _quieted
    # bitsandbytes logs at import, without a handler of its own (the root's last resort prints it).
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # DeepSpeed sets its logger's level when it creates it, so a filter, which that keeps.
    logging.getLogger("DeepSpeed").addFilter(_errors_only)
    logging.getLogger("transformers.modeling_utils").addFilter(_load_report)
    for package in LIBRARY_PACKAGES:
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{package}(\.|$)")
    _quieted = True


def quiet_ray_logs() -> None:
    """Call before ray.init: Ray's notes at start-up (local instance started, token authentication on) are for
    its operators."""
    if not _quieted:
        return
    import ray  # noqa: F401 - the import adds the handler; ray.init resets the logger's level, not the handler's

    for handler in logging.getLogger("ray").handlers:
        handler.setLevel(logging.ERROR)
    # Serve (the reward model's server) replaces its logger's handlers and level when it starts; a filter stays.
    logging.getLogger("ray.serve").addFilter(_errors_only)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _load_report(record: logging.LogRecord) -> bool:
    """transformers' LOAD REPORT: dropped when it only says a sequence classifier's score head is new (every
    reward model starts so); any other report shows, without its terminal colour codes when not on a terminal."""
    message = record.getMessage()
    if "LOAD REPORT" not in message:
        return True
    if _only_a_new_score_head(ANSI_ESCAPE.sub("", message)):
        return False
    if not sys.stderr.isatty():
        record.msg, record.args = ANSI_ESCAPE.sub("", message), None
    return True


def _only_a_new_score_head(report: str) -> bool:
    """Whether a report's rows are a sequence classifier's missing score.* weights and unused lm_head.* ones."""
    first_line = report.splitlines()[0] if report else ""
    if "ForSequenceClassification LOAD REPORT" not in first_line:
        return False
    rows = [[cell.strip() for cell in line.split("|")] for line in report.splitlines()[1:] if "|" in line]
    rows = [row for row in rows if len(row) >= 2 and row[0] not in ("", "Key") and not row[0].startswith("-")]
    expected = {"MISSING": "score.", "UNEXPECTED": "lm_head."}
    return bool(rows) and all(row[1] in expected and row[0].startswith(expected[row[1]]) for row in rows)
