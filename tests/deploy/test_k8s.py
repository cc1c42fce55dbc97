"""The Kubernetes manifests in deploy/k8s/: valid against a pinned Kubernetes version
(offline, strict schemas) and wired the way docs/operations.md says they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from oddsfeed.settings import load_settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The oldest Kubernetes the manifests promise to work on (docs/operations.md).
K8S_VERSION = "1.30.0"
NEWEST_CHECKED = "1.33.0"
FANOUT = {"app.kubernetes.io/name": "oddsfeed", "app.kubernetes.io/component": "fanout"}


def resources() -> list[tuple[str, dict[str, Any]]]:
    """Every (file name, resource) of deploy/k8s/*.yaml, in file order."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def one(kind: str, name: str) -> dict[str, Any]:
    """The resource of ``kind`` named ``name`` (exactly one must exist)."""
    matches = [r for _, r in resources()
               if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The single container of a Deployment's pod template."""
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("version", [K8S_VERSION, NEWEST_CHECKED])
def test_every_manifest_validates(version: str) -> None:
    """Every resource passes the strict OpenAPI schema of the pinned versions (no unknown
    fields, no missing required ones)."""
    docs = resources()
    assert {r["kind"] for _, r in docs} >= {
        "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "ConfigMap", "Secret"}
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message} "
                        f"at {list(exc.path)}")


def test_fanout_probes_drain_and_hardening() -> None:
    """The fan-out pod is ready on /readyz, alive on /healthz, and its grace period covers
    the preStop pause plus the 1001 drain; it runs non-root on a read-only root."""
    dep = one("Deployment", "oddsfeed-fanout")
    spec = dep["spec"]["template"]["spec"]
    c = container(dep)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"ws": 8765, "http": 8080}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert spec["terminationGracePeriodSeconds"] >= pause + 15
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}
    assert c["args"] == ["oddsfeed", "serve"]


def test_service_pdb_and_autoscaler_select_the_fanout() -> None:
    """The Service, the PodDisruptionBudget and the autoscaler all point at the fan-out pods."""
    dep = one("Deployment", "oddsfeed-fanout")
    assert dep["spec"]["selector"]["matchLabels"] == FANOUT
    assert FANOUT.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    svc = one("Service", "oddsfeed-fanout")
    assert svc["spec"]["selector"] == FANOUT
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"ws", "http"}
    pdb = one("PodDisruptionBudget", "oddsfeed-fanout")
    assert pdb["spec"]["selector"]["matchLabels"] == FANOUT
    hpa = one("HorizontalPodAutoscaler", "oddsfeed-fanout")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "oddsfeed-fanout"
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_ingesters_run_one_replica_per_feed() -> None:
    """Each ingester Deployment runs one replica of one feed and never two at once."""
    ingesters = [r for _, r in resources() if r["kind"] == "Deployment"
                 and r["metadata"]["labels"]["app.kubernetes.io/component"] == "ingest"]
    assert ingesters
    feeds = [d["metadata"]["labels"]["oddsfeed/feed"] for d in ingesters]
    assert len(feeds) == len(set(feeds))
    for dep in ingesters:
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        assert container(dep)["args"][:2] == ["oddsfeed", "ingest"]


def test_environment_is_valid_oddsfeed_settings() -> None:
    """The ConfigMap and Secret hold only ODDSFEED_* keys that oddsfeed's settings accept,
    and every pod takes both through envFrom."""
    env = {**one("ConfigMap", "oddsfeed-config")["data"],
           **one("Secret", "oddsfeed-secrets")["stringData"]}
    assert all(key.startswith("ODDSFEED_") for key in env)
    settings = load_settings(None, env)
    assert settings.redis.cluster is True
    assert settings.server.host == "0.0.0.0"
    assert settings.auth.hs256_secret
    for _, dep in resources():
        if dep["kind"] == "Deployment":
            refs = container(dep)["envFrom"]
            assert {"configMapRef": {"name": "oddsfeed-config"}} in refs
            assert {"secretRef": {"name": "oddsfeed-secrets"}} in refs
