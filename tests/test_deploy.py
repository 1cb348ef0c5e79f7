"""deploy/: the Kubernetes manifests and the compose file, checked as files a reader applies.

Kubernetes: kubernetes-validate's schemas (shipped in the package, offline), strict
(unknown fields refused). Compose: the compose-spec JSON schema that check-jsonschema
vendors (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``, from the
compose-spec project, Apache-2.0, licence beside it in ``licenses/``), with jsonschema.
Beyond the schemas: the settings that make the recipes safe and match our SIGTERM handling.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from harness.image.dockerfile import key_values, parse
from natlangchain_migrate.connection import CLEANUP_S
from natlangchain_migrate.settings import RunSettings

REPO = Path(__file__).resolve().parent.parent
KUBERNETES = REPO / "deploy" / "kubernetes"
COMPOSE = REPO / "deploy" / "compose.yaml"
# On SIGTERM the CLI cancels and rolls back, releases the lock, and closes the connection,
# each bounded by CLEANUP_S (connection.cleanup_scope).
SIGTERM_CLEANUP_STEPS = 3


def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in manifests():
        yield doc["kind"], doc["spec"]["template"]["spec"]


def compose_schema() -> dict[str, Any]:
    vendored = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text(encoding="utf-8"))
    return schema


def compose_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [error.message for error in validator.iter_errors(document)]


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_deploy_ships_a_deployment_and_a_job() -> None:
    """The two recipes README points to, one resource each."""
    assert sorted(doc["kind"] for doc in manifests()) == ["Deployment", "Job"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_kubernetes_manifest_is_valid_against_the_kubernetes_schema(kind: str) -> None:
    """Each resource passes strict validation against the newest Kubernetes schema shipped."""
    version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(by_kind(kind), version, strict=True)


def test_kubernetes_validation_refuses_a_wrong_field() -> None:
    """The schema check has teeth: a misspelt or mistyped field fails it."""
    version = kubernetes_validate.utils.latest_version()
    job = copy.deepcopy(by_kind("Job"))
    job["spec"]["backoffLimit"] = "none"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, version, strict=True)
    job = copy.deepcopy(by_kind("Job"))
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRoot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, version, strict=True)


def test_the_deployment_runs_the_migrations_as_an_init_container() -> None:
    """Every replica runs the image before the API; the Dockerfile's entrypoint is kept."""
    spec = by_kind("Deployment")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["image"].startswith("natlangchain-migrate:")
    assert "command" not in init
    assert "args" not in init
    assert by_kind("Deployment")["spec"]["replicas"] > 1


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_every_container_runs_non_root_read_only_without_capabilities(kind: str) -> None:
    """runAsNonRoot as the image's uid, read-only root, ALL capabilities dropped, resources."""
    spec = dict(pod_specs())[kind]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    for container in spec.get("initContainers", []) + spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, container["name"]


def test_the_image_user_is_the_uid_the_manifests_ask_for() -> None:
    """runAsNonRoot needs a numeric USER in the image; it is the manifests' runAsUser."""
    final = parse(REPO / "Dockerfile")[-1]
    assert [step.arguments for step in final.steps("USER")] == ["10001"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_grace_period_outlasts_the_sigterm_cleanup(kind: str) -> None:
    """Kubernetes sends SIGKILL after the grace period: it must cover the bounded cleanup."""
    spec = dict(pod_specs())[kind]
    assert spec["terminationGracePeriodSeconds"] >= SIGTERM_CLEANUP_STEPS * CLEANUP_S + 5


def test_job_runs_once_within_a_deadline_longer_than_its_waits() -> None:
    """No retry of a failed migration; the deadline covers the server wait and the lock wait."""
    job = by_kind("Job")["spec"]
    (container,) = job["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    image_env: dict[str, str] = {}
    for step in parse(REPO / "Dockerfile")[-1].steps("ENV"):
        image_env |= key_values(step.arguments)
    wait = float(env.get("NATLANGCHAIN_MIGRATE_WAIT") or image_env["NATLANGCHAIN_MIGRATE_WAIT"])
    lock_wait = float(env.get("NATLANGCHAIN_MIGRATE_LOCK_TIMEOUT") or RunSettings().lock_wait)
    assert job["backoffLimit"] == 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["activeDeadlineSeconds"] > wait + lock_wait


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    """deploy/compose.yaml passes the compose-spec JSON schema."""
    assert compose_errors(compose()) == []


def test_compose_validation_refuses_an_unknown_condition() -> None:
    """The schema check has teeth: a depends_on condition compose does not know fails it."""
    document = compose()
    document["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    assert compose_errors(document)


def test_compose_starts_three_api_replicas_after_the_migrations_succeed() -> None:
    """db (pgvector, healthy) -> migrate (exit 0) -> three API replicas."""
    services = compose()["services"]
    assert "pgvector" in services["db"]["image"]
    assert "healthcheck" in services["db"]
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["api"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}
    }
    assert services["api"]["deploy"]["replicas"] == 3


def test_compose_builds_the_migrate_image_from_this_dockerfile_locked_down() -> None:
    """The migrate service is this repository's image, as uid 10001, read-only, no caps."""
    migrate = compose()["services"]["migrate"]
    context = (COMPOSE.parent / migrate["build"]["context"]).resolve()
    assert (context / migrate["build"]["dockerfile"]).resolve() == REPO / "Dockerfile"
    assert migrate["user"] == "10001"
    assert migrate["read_only"] is True
    assert migrate["cap_drop"] == ["ALL"]
    assert "command" not in migrate
    assert "entrypoint" not in migrate
    grace = float(migrate["stop_grace_period"].removesuffix("s"))
    assert grace >= SIGTERM_CLEANUP_STEPS * CLEANUP_S + 5
