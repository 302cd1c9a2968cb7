"""``aios export MODEL[:ALIAS] --to kserve DIR``: a container build context and KServe manifests for one version.

DIR gets ``model/`` (the version's files, verified against its manifest before they are copied, and
``manifest.json``), ``artifact.json`` (name, version, the manifest's sha256 from the catalog, signature,
metrics, lineage), a ``Dockerfile`` that installs aios_lab and copies both in, ``inferenceservice.yaml`` (a
``ServingRuntime`` declaring the V2 protocol, with readiness on ``/v2/health/ready``, and the
``InferenceService`` that uses it) and a ``README.md``. The container runs
:mod:`aios_lab.export.artifact_server`: the same V2 app as ``aios serve``, over the copied version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AiosError, InvalidInput
from . import common
from .artifact_server import ARTIFACT

PORT = 8080  # KServe's (and Knative's) default port for a predictor container
ROOT = "/opt/aios"
TOKENS_DIR = "/var/run/aios"
MODEL_FORMAT = "aios-lab"


@dataclass(frozen=True)
class KServeExport:
    """What ``export_model`` wrote."""

    model: str
    version: int
    name: str
    directory: Path
    image: str
    files: list[str]

    def __str__(self) -> str:
        return (
            f"exported {self.model}:v{self.version} to {self.directory}: InferenceService {self.name} "
            f"({', '.join(self.files)}); next: {self.directory / 'README.md'}"
        )


def parse_ref(ref: str) -> tuple[str, int | str | None]:
    """``MODEL``, ``MODEL:ALIAS``, ``MODEL:3`` or ``MODEL:v3`` -> (model, version or alias or None)."""
    name, _, r = ref.partition(":")
    if not r:
        return name, None
    return name, int(r.lstrip("v")) if r.lstrip("v").isdecimal() else r


def export_model(
    ref: str,
    directory: str | Path,
    *,
    image: str | None = None,
    name: str | None = None,
    min_replicas: int = 1,
    cpu: str = "1",
    memory: str = "2Gi",
) -> KServeExport:
    """Write the KServe export of ``ref`` (default: its production alias, else the newest version) into
    ``directory`` (new or empty); the artifact is verified first, and nothing is written on bad input."""
    from .. import registry
    from ..catalog import catalog
    from ..registry.load import verify
    from ..registry.publish import sha256_bytes

    model, version = parse_ref(ref)
    if version is None and "production" in {a for mv in registry.list_models(model) for a in mv.aliases}:
        version = "production"
    mv = registry.get(model, version)
    files = verify(mv)  # every file against the manifest, the manifest against the catalog
    manifest = (Path(mv.path) / "manifest.json").read_bytes()
    if sha256_bytes(manifest) != mv.manifest_sha256:
        raise AiosError(f"model {mv.ref}: manifest.json changed while it was read; export again")
    if not 0 <= min_replicas <= 1000:
        raise InvalidInput(f"--min-replicas must be from 0 to 1000, not {min_replicas!r}")
    isvc = common.check_k8s_name(name) if name else common.k8s_name(model, "InferenceService name")
    img = image or f"aios-{isvc}:v{mv.version}"
    artifact = {
        "name": mv.name,
        "version": mv.version,
        "manifest_sha256": mv.manifest_sha256,
        "signature": mv.signature,
        "metrics": mv.metrics,
        "lineage": mv.lineage,
        "aliases": mv.aliases,
    }
    texts = {
        "Dockerfile": common.dockerfile(
            "",
            [("model/", f"{ROOT}/model/"), (ARTIFACT, f"{ROOT}/{ARTIFACT}")],
            ["python", "-m", "aios_lab.export.artifact_server", ROOT],
            {},
        ),
        "inferenceservice.yaml": common.dump_all(manifests(isvc, mv, img, min_replicas, cpu, memory)),
        "README.md": readme(isvc, mv, img),
    }
    with common.staged_dir(directory) as tmp:
        (tmp / "model").mkdir()
        for fname, data in {**files, "manifest.json": manifest}.items():
            (tmp / "model" / fname).write_bytes(data)
        (tmp / ARTIFACT).write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n")
        for fname, text in texts.items():
            (tmp / fname).write_text(text)
    catalog().audit("export.kserve", mv.ref, directory=str(directory), manifest_sha256=mv.manifest_sha256)
    out = Path(directory).expanduser().absolute()
    return KServeExport(mv.name, mv.version, isvc, out, img, sorted([*texts, ARTIFACT, "model/"]))


def manifests(name: str, mv: Any, image: str, min_replicas: int, cpu: str, memory: str) -> list[dict[str, Any]]:
    """The ServingRuntime (the V2 container) and the InferenceService that runs it."""
    runtime = f"{name}-v{mv.version}"
    lab = common.labels("kserve", name, **{"aios-lab/version": str(mv.version)})
    notes = {"aios-lab/model": mv.ref, "aios-lab/manifest-sha256": mv.manifest_sha256}
    probe = lambda path, period: {"httpGet": {"path": path, "port": PORT}, "periodSeconds": period}
    container = {
        "name": "kserve-container",
        "image": image,
        "args": ["--port", str(PORT)],
        "env": [{"name": "AIOS_TOKEN_FILE", "value": f"{TOKENS_DIR}/tokens"}],
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {**probe("/v2/health/ready", 5), "initialDelaySeconds": 2, "failureThreshold": 3},
        "livenessProbe": {**probe("/v2/health/live", 10), "initialDelaySeconds": 30},
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "volumeMounts": [{"name": "aios-tokens", "mountPath": TOKENS_DIR, "readOnly": True}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    serving_runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": runtime, "labels": lab, "annotations": notes},
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "version": "1", "autoSelect": False}],
            "protocolVersions": ["v2"],
            "containers": [container],
            "volumes": [{"name": "aios-tokens", "secret": {"secretName": f"{name}-tokens"}}],
        },
    }
    inference_service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": lab, "annotations": notes},
        "spec": {
            "predictor": {
                "minReplicas": min_replicas,
                "model": {
                    "modelFormat": {"name": MODEL_FORMAT, "version": "1"},
                    "runtime": runtime,
                    "protocolVersion": "v2",
                },
            }
        },
    }
    return [serving_runtime, inference_service]


def readme(name: str, mv: Any, image: str) -> str:
    sig = "; ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in mv.signature.get("inputs", []))
    return f"""# {mv.ref} on KServe

Files: `model/` (the registry version: every file checked against `manifest.json`, whose sha256
`{mv.manifest_sha256}` the catalog recorded at publish, before it was copied here), `artifact.json`
(what the catalog knows of it), `Dockerfile`, `inferenceservice.yaml` (ServingRuntime `{name}-v{mv.version}`
and InferenceService `{name}`).

The container runs `python -m aios_lab.export.artifact_server {ROOT}`: the V2 (Open Inference
Protocol) server of `aios serve`, with binary tensors, `/metrics` and bearer tokens. It checks the files
against the manifest again when it starts, and does not start when they do not verify or when it has no
token. Inputs: {sig}.

## Run it

1. Build and push the image (`--build-arg AIOS_LAB=...` installs aios_lab from a wheel or git URL):

       docker build -t REGISTRY/{image} .
       docker push REGISTRY/{image}

   and put that name in `inferenceservice.yaml` (or export again with `--image`).
2. Tokens: the server reads them, one per line, from the Secret `{name}-tokens` (key `tokens`):

       kubectl create secret generic {name}-tokens --from-literal=tokens="$(aios token create --role infer)"

3. `kubectl apply -f inferenceservice.yaml`, then `kubectl get inferenceservice {name}` until READY.
   Readiness is `/v2/health/ready` on port {PORT}; any V2 client works against the service's URL:

       curl -H "Authorization: Bearer $TOKEN" $URL/v2/models/{mv.name}

## What was and was not exercised

{EXERCISED}
"""


EXERCISED = """Tested here, without a Kubernetes cluster: the ServingRuntime's container validates against the
Kubernetes 1.37 Pod schema (`kubernetes-validate`, strict), the ServingRuntime and the InferenceService
against KServe's CRD OpenAPI schemas (serving.kserve.io v1alpha1 and v1beta1, unknown fields refused);
the container's command, run from this folder on the test machine, served the copied version to
tritonclient with a token and refused requests without one; a tampered artifact is refused before
anything is written. Not exercised: `docker build` (no Docker daemon here), a Kubernetes cluster,
KServe's controller and its probes."""
