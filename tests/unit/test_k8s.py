"""``deploy/k8s``: every overlay renders, validates against the Kubernetes API schemas and is
consistent (selectors, probes, settings names, secrets, GPU only where asked).

Rendering uses ``helpers.kustomize`` (kustomize is not packaged for Debian or PyPI); where a
``kubectl`` exists, its ``kubectl kustomize`` output must equal ours. Validation uses
``kubernetes-validate``'s bundled schemas (no network), strict (unknown fields are errors).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helpers.kustomize import UnsupportedKustomization, render, strategic_merge

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes release we support and the newest schema bundled with the validator.
K8S_VERSIONS = ("1.29.0", "1.37.0")
SETTINGS_VARIABLES = {f"DARS_{name.upper()}" for name in Settings.model_fields}

Manifest = dict[str, Any]


def by_kind(manifests: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


def router_container(manifests: list[Manifest]) -> Manifest:
    deployment = by_kind(manifests)[("Deployment", "dars-router")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    return request.param, render(K8S / "overlays" / request.param)


# --- the renderer itself


def test_strategic_merge_merges_keyed_lists_and_replaces_others() -> None:
    base = {
        "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}], "args": ["p"]}],
        "tolerations": [{"key": "old"}],
        "drop": 1,
    }
    patch = {
        "containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}], "args": ["q"]},
            {"name": "b"},
        ],
        "tolerations": [{"key": "new"}],
        "drop": None,
    }
    assert strategic_merge(base, patch) == {
        "containers": [
            {"name": "b"},
            {
                "name": "a",
                "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}],
                "args": ["q"],
            },
        ],
        "tolerations": [{"key": "new"}],
    }
    assert base["drop"] == 1, "the base must not be modified"


def test_renderer_refuses_fields_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(UnsupportedKustomization, match="namePrefix"):
        render(tmp_path)


@pytest.mark.parametrize("name", OVERLAYS)
def test_renderer_matches_kubectl_kustomize(name: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (not packaged for Debian); renderer unchecked")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / name)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    theirs = by_kind([d for d in yaml.safe_load_all(out) if d])
    assert by_kind(render(K8S / "overlays" / name)) == theirs


# --- schema validation


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(
    overlay: tuple[str, list[Manifest]], version: str
) -> None:
    _, manifests = overlay
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    assert {"ConfigMap", "Secret"} <= kinds
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']} (k8s {version}): {exc}")


def test_the_validator_rejects_an_unknown_field() -> None:
    service = next(m for m in render(K8S / "base") if m["kind"] == "Service")
    broken = strategic_merge(service, {"spec": {"prots": []}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


# --- consistency


def test_selectors_and_references_point_at_existing_objects(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, manifests = overlay
    objects = by_kind(manifests)
    for (kind, name), manifest in objects.items():
        if kind != "Deployment":
            continue
        pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
        selector = manifest["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items(), name
        service = objects[("Service", name)]
        assert service["spec"]["selector"].items() <= pod_labels.items(), name
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            port_names = {p["name"] for p in container["ports"]}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source["secretRef"]
                kind_ref = "ConfigMap" if "configMapRef" in source else "Secret"
                assert (kind_ref, ref["name"]) in objects
    router_labels = objects[("Deployment", "dars-router")]["spec"]["template"]["metadata"]
    pdb = objects[("PodDisruptionBudget", "dars-router")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= router_labels["labels"].items()
    target = objects[("HorizontalPodAutoscaler", "dars-router")]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in objects


def test_router_probes_resources_and_security(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    deployment = by_kind(manifests)[("Deployment", "dars-router")]
    container = router_container(manifests)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == dockerfile_uid()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns replicas"


def dockerfile_uid() -> int:
    """The numeric USER of the Dockerfile's runtime stages (all must agree)."""
    users = {
        line.split()[1].split(":")[0]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    }
    assert len(users) == 1, users
    return int(users.pop())


def test_settings_are_real_dars_variables_and_secrets_are_placeholders(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, manifests = overlay
    objects = by_kind(manifests)
    config = objects[("ConfigMap", "dars-router-config")]["data"]
    secret = objects[("Secret", "dars-router-secrets")]["stringData"]
    env = {e["name"] for e in router_container(manifests).get("env", [])}
    for name in [*config, *secret, *(e for e in env if e.startswith("DARS_"))]:
        assert name in SETTINGS_VARIABLES, f"{name} is not a setting of the service"
    assert set(config).isdisjoint(secret)
    assert {"DARS_ADMIN_TOKEN", "DARS_API_KEYS"} <= set(secret)
    assert all(value == "" for value in secret.values()), "no secret value may be committed"
    # Built like the service does: the shipped settings must be accepted as they are.
    fields = {key.removeprefix("DARS_").lower(): value for key, value in config.items()}
    settings = Settings(_env_file=None, **fields)
    assert settings.host == "0.0.0.0"
    redis = objects[("Service", "dars-redis")]["spec"]["ports"][0]["port"]
    assert config["DARS_REDIS_URL"] == f"redis://dars-redis:{redis}/0"
    assert int(config["DARS_PORT"]) == router_container(manifests)["ports"][0]["containerPort"]


def test_only_the_gpu_overlay_asks_for_a_gpu(overlay: tuple[str, list[Manifest]]) -> None:
    name, manifests = overlay
    container = router_container(manifests)
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    if name == "gpu":
        assert gpus == "1"
        assert container["image"].endswith("-gpu")
        assert env["DARS_EMBEDDING_DEVICE"] == "cuda"
        assert env["DARS_ONNX_PROVIDERS"].startswith("cuda")
    else:
        assert gpus is None
        assert not container["image"].endswith("-gpu")
        assert "DARS_EMBEDDING_DEVICE" not in env
    # The patch adds to the base's env and volume mounts, it does not replace them.
    assert "XDG_CACHE_HOME" in env
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
