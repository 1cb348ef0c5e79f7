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
from natlangchain_migrate.settings import LockOptions

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


# The migrations Job (before the rollout) and the contract Job (after it) are both Jobs.
JOB = "natlangchain-migrate"
CONTRACT_JOB = "natlangchain-migrate-contract"
FLEET_JOB = "natlangchain-migrate-fleet"
NAMES = ["natlangchain-api", JOB, CONTRACT_JOB, FLEET_JOB]


def by_name(name: str) -> dict[str, Any]:
    (found,) = [doc for doc in manifests() if doc["metadata"]["name"] == name]
    return found


def by_kind(kind: str) -> dict[str, Any]:
    """The one resource of ``kind``; for ``Job``, the migrations Job."""
    if kind == "Job":
        return by_name(JOB)
    (found,) = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in manifests():
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


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


def test_deploy_ships_a_deployment_and_three_jobs() -> None:
    """The recipes README points to: the API, the migrations Job, the contract Job, and
    the fleet's indexed Job."""
    found = sorted((doc["kind"], doc["metadata"]["name"]) for doc in manifests())
    assert found == [
        ("Deployment", "natlangchain-api"),
        ("Job", JOB),
        ("Job", CONTRACT_JOB),
        ("Job", FLEET_JOB),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_kubernetes_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    """Each resource passes strict validation against the newest Kubernetes schema shipped."""
    version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(by_name(name), version, strict=True)


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


@pytest.mark.parametrize("name", NAMES)
def test_every_container_runs_non_root_read_only_without_capabilities(name: str) -> None:
    """runAsNonRoot as the image's uid, read-only root, ALL capabilities dropped, resources."""
    spec = dict(pod_specs())[name]
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


@pytest.mark.parametrize("name", NAMES)
def test_grace_period_outlasts_the_sigterm_cleanup(name: str) -> None:
    """Kubernetes sends SIGKILL after the grace period: it must cover the bounded cleanup."""
    spec = dict(pod_specs())[name]
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
    lock_wait = float(env.get("NATLANGCHAIN_MIGRATE_LOCK_TIMEOUT") or LockOptions().wait)
    assert job["backoffLimit"] == 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["activeDeadlineSeconds"] > wait + lock_wait


def test_the_contract_job_retries_only_while_old_replicas_are_alive() -> None:
    """`contract` exits 25 while a contract part waits: that, and only that, is retried
    (a podFailurePolicy fails the Job at once on any other code); it runs the new image's
    `contract` command, and its deadline outlasts the replica max age and the lock wait."""
    from natlangchain_migrate.contracts import parse_age
    from natlangchain_migrate.errors import ExitCode

    job = by_name(CONTRACT_JOB)["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert container["args"] == ["contract"]
    assert "command" not in container
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["backoffLimit"] >= 3
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["operator"] == "NotIn"
    assert rule["onExitCodes"]["containerName"] == container["name"]
    assert rule["onExitCodes"]["values"] == [ExitCode.CONTRACT_WAITING]  # a pod exiting 0 succeeded
    env = {item["name"]: item.get("value") for item in container["env"]}
    max_age = parse_age(env.get("NATLANGCHAIN_MIGRATE_REPLICA_MAX_AGE") or "60s", "max age")
    lock_wait = float(env["NATLANGCHAIN_MIGRATE_LOCK_TIMEOUT"])
    assert job["activeDeadlineSeconds"] > float(env["NATLANGCHAIN_MIGRATE_WAIT"]) + lock_wait
    # Kubernetes waits 10 s, 20 s, 40 s, ... (capped at 6 min) between tries.
    backoff = sum(min(10 * 2**n, 360) for n in range(job["backoffLimit"]))
    assert backoff > 2 * max_age
    assert job["activeDeadlineSeconds"] > backoff


def test_the_fleet_job_gives_each_pod_its_own_shard() -> None:
    """An indexed Job of N pods: pod I runs `fleet --shard I/N` (N the completions), with
    the index from the pod's annotation; every index is a shard the CLI accepts; no retry
    of a failed shard; the targets file comes from a ConfigMap and the password from a
    Secret, never from the file."""
    from natlangchain_migrate.fleet_targets import parse_shard

    job = by_name(FLEET_JOB)["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"]
    assert job["backoffLimit"] == 0
    (container,) = job["template"]["spec"]["containers"]
    command, flag, shard = container["args"]
    assert (command, flag) == ("fleet", "--shard")
    assert shard == f"$(JOB_COMPLETION_INDEX)/{job['completions']}"
    env = {item["name"]: item for item in container["env"]}
    field = env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    for index in range(job["completions"]):
        assert parse_shard(shard.replace("$(JOB_COMPLETION_INDEX)", str(index))).position == index
    assert "secretKeyRef" in env["DB_PASSWORD"]["valueFrom"]
    (mount,) = container["volumeMounts"]
    assert env["NATLANGCHAIN_MIGRATE_TARGETS"]["value"].startswith(mount["mountPath"] + "/")
    lock_wait = float(env["NATLANGCHAIN_MIGRATE_LOCK_TIMEOUT"]["value"])
    assert (
        job["activeDeadlineSeconds"] > float(env["NATLANGCHAIN_MIGRATE_WAIT"]["value"]) + lock_wait
    )


def _api_and_init() -> tuple[dict[str, Any], dict[str, Any]]:
    spec = by_name("natlangchain-api")["spec"]["template"]["spec"]
    (api,) = spec["containers"]
    (init,) = spec["initContainers"]
    return api, init


def test_the_api_is_ready_by_check_against_the_database_its_init_container_migrated() -> None:
    """The readiness probe is ``--check`` (0 also when a newer release moved the database
    ahead) on the same database URL as the init container; no container refuses future rows."""
    api, init = _api_and_init()
    probe = api["readinessProbe"]
    assert probe["exec"]["command"] == ["natlangchain-migrate", "--check"]
    assert probe["timeoutSeconds"] >= 5  # a Python process start plus a connect, on a busy node
    url = {item["name"]: item["valueFrom"] for item in api["env"]}["DATABASE_URL"]
    assert url == {item["name"]: item["valueFrom"] for item in init["env"]}["DATABASE_URL"]
    for _, spec in pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            names = {item["name"] for item in container.get("env", [])}
            assert "NATLANGCHAIN_MIGRATE_REFUSE_FUTURE" not in names, container["name"]


def test_the_rollout_adds_one_new_replica_before_it_stops_an_old_one() -> None:
    """maxSurge 1, maxUnavailable 0: the rollout benchmarks/rolling_deploy.py measures."""
    strategy = by_name("natlangchain-api")["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


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
