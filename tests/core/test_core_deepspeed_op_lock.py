"""A torch-extensions build lock left by a killed DeepSpeed op build: the stage fails at once with the file and the
fix instead of waiting forever, while a live build (a process holding the lock open) is waited for.

No op is compiled: the locks are made the way torch's builder makes them (FileBaton: O_CREAT | O_EXCL, the file
held open during the build) in a private TORCH_EXTENSIONS_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alignment_core.stages.deepspeed_ops import (
    StaleOpBuildLock,
    _ops_deepspeed_will_build,
    check_deepspeed_op_builds,
    wait_for_op_build,
)

ROOT = Path(__file__).resolve().parents[2]
OP = "deepspeed_shm_comm"
LONG_AGO = time.time() - 3600


def killed_build(folder: Path, when: float = LONG_AGO) -> Path:
    """What a build killed mid-compile leaves: the lock and a truncated object file, untouched since `when`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lock").touch()
    (folder / "shm.o").write_bytes(b"\x7fELF")
    for path in (folder / "lock", folder / "shm.o", folder):
        os.utime(path, (when, when))
    return folder / "lock"


def test_the_op_deepspeed_compiles_is_looked_for_in_torch_extensions_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    # The CPU accelerator builds its shared-memory all-reduce op at init (this image has the compiler for it).
    assert _ops_deepspeed_will_build() == [tmp_path / OP]


def test_a_stale_lock_fails_at_once_with_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    check_deepspeed_op_builds()  # no lock: nothing to wait for
    lock = killed_build(tmp_path / OP)
    started = time.monotonic()
    with pytest.raises(StaleOpBuildLock) as caught:
        check_deepspeed_op_builds()
    assert time.monotonic() - started < 5
    assert str(lock) in str(caught.value) and f"rm -rf {tmp_path / OP}" in str(caught.value)
    assert lock.exists()  # reported, not removed


def test_a_fresh_lock_without_a_holder_is_stale_only_once_nothing_changes(tmp_path):
    lock = killed_build(tmp_path / OP, when=time.time())
    started = time.monotonic()
    with pytest.raises(StaleOpBuildLock):
        wait_for_op_build(lock.parent, stale_after_s=2, poll_s=0.1)
    assert time.monotonic() - started >= 1.9  # a build elsewhere (another container or host) would have written


def test_a_live_build_is_waited_for_however_old_its_lock(tmp_path):
    folder = tmp_path / OP
    folder.mkdir()
    builder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from torch.utils.file_baton import FileBaton
            baton = FileBaton({str(folder / "lock")!r})
            assert baton.try_acquire()
            print("building", flush=True)
            time.sleep(3)
            open({str(folder / (OP + ".so"))!r}, "wb").close()
            baton.release()
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert builder.stdout.readline().strip() == "building"
        # Old enough to look stale by its age alone: only the open file tells the build is alive.
        for path in (folder / "lock", folder):
            os.utime(path, (LONG_AGO, LONG_AGO))
        started = time.monotonic()
        wait_for_op_build(folder, stale_after_s=0.5, poll_s=0.1)
        assert time.monotonic() - started >= 2
        assert (folder / f"{OP}.so").exists() and not (folder / "lock").exists()
    finally:
        builder.wait(timeout=30)
    assert builder.returncode == 0


STAGE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from alignment_core.context import LocalContext
    from alignment_core.specs import load_spec
    from alignment_core.stages import run_stage
    run_stage(load_spec(json.loads(sys.argv[1])), LocalContext(Path(sys.argv[2])))
""")


@pytest.mark.deepspeed
def test_a_zero_stage_behind_a_stale_lock_fails_instead_of_hanging(tiny_model_dir, demo_data, tmp_path):
    lock = killed_build(tmp_path / "torch-extensions" / OP)
    spec = {
        "method": "supervised",
        "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train_files": [str(demo_data["sft"])], "max_examples": 8, "max_length": 64},
        "training": {"max_steps": 1, "batch_size": 2},
        "distribution": {"zero_stage": 2},
    }
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29531", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch-extensions")}
    # Without the check DeepSpeed's TorchBackend polls the lock forever and this times out.
    stage = subprocess.run([sys.executable, "-c", STAGE, json.dumps(spec), str(tmp_path / "run")], env=env,
                           capture_output=True, text=True, timeout=300)
    assert stage.returncode != 0
    assert "StaleOpBuildLock" in stage.stderr and f"rm -rf {lock.parent}" in stage.stderr, stage.stderr[-3000:]
    assert lock.exists()
