"""Connect to the Ray cluster the settings name, or start a local one that stays on loopback."""

from __future__ import annotations

import os

# Without the first, Ray swaps 127.0.0.1 for the machine's outward address; the second keeps Ray
# from phoning home; the third makes Train pick up worker reports in 0.2 s instead of seconds.
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """ray.init once per process; returns the GCS address other processes may join."""
    for name, value in LOOPBACK_ENV.items():
        os.environ.setdefault(name, value)
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    return ray.get_runtime_context().gcs_address
