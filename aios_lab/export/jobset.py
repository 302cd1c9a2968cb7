"""``aios export JOB --to jobset DIR``: a JobSet that runs the job's training over N pods, and how to run it.

DIR gets ``jobset.yaml`` (a ServiceAccount with the read access JAX's Kubernetes detection needs, a
ConfigMap holding the job document, and the JobSet), a ``Dockerfile`` for the worker image and a
``README.md``. One replicated job of N pods (an Indexed Job: ``parallelism`` = ``completions`` = N),
each with K devices; ``jax.distributed.initialize()`` finds the coordinator (pod 0, port 55527), the
process count and its own index by itself (:mod:`aios_lab.export.pod_worker`). Datasets and
checkpoints live on a ReadWriteMany volume (``--volume``, mounted at ``/mnt/aios``) or at URIs given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from . import common

MOUNT = "/mnt/aios"
CONFIG_DIR = "/etc/aios"
COORDINATOR_PORT = 55527  # JAX's fixed port for Kubernetes (jax._src.clusters.k8s_cluster)
REPLICATED_JOB = "workers"
ACCELERATORS = {"gpu": "nvidia.com/gpu", "tpu": "google.com/tpu"}


@dataclass(frozen=True)
class JobSetExport:
    """What ``export_job`` wrote."""

    job: str
    name: str
    directory: Path
    pods: int
    devices_per_pod: int
    accelerator: str
    image: str
    files: list[str]

    def __str__(self) -> str:
        return (
            f"exported job {self.job} to {self.directory}: JobSet {self.name}, {self.pods} pods x "
            f"{self.devices_per_pod} {self.accelerator} devices ({', '.join(self.files)}); "
            f"next: {self.directory / 'README.md'}"
        )


def export_job(
    job: str,
    directory: str | Path,
    *,
    pods: int | None = None,
    devices_per_pod: int | None = None,
    accelerator: str | None = None,
    image: str | None = None,
    volume: str = "aios-shared",
    checkpoint_dir: str | None = None,
    dataset_uri: str | None = None,
    max_restarts: int = 3,
    name: str | None = None,
) -> JobSetExport:
    """Write the JobSet of ``job`` into ``directory`` (new or empty); nothing is written on bad input."""
    from ..data import get as get_dataset
    from ..jobs import job as get_job

    j = get_job(job)
    train = dict(j.config["train"])
    n_devices = int(train["n_devices"])
    processes = int(j.config.get("processes") or train.get("num_processes") or 1)  # a Ray gang: its hosts
    pods = _whole("--pods", processes if pods is None else pods, 1, 4096)
    k = _whole("--devices-per-pod", max(1, n_devices // pods) if devices_per_pod is None else devices_per_pod, 1, 1024)
    kind = accelerator or j.to_json().get("device_kind") or "cpu"
    if kind not in ("cpu", "gpu", "tpu"):
        raise InvalidInput(f"--accelerator must be cpu, gpu or tpu, not {kind!r}")
    if train["batch"] % (pods * k):
        raise InvalidInput(
            f"the job's batch {train['batch']} is not divisible by {pods} pods x {k} devices; "
            "pick other --pods or --devices-per-pod"
        )
    if not 0 <= max_restarts <= 1000:
        raise InvalidInput(f"--max-restarts must be from 0 to 1000, not {max_restarts!r}")
    jobset = common.check_k8s_name(name) if name else common.k8s_name(j.name, "JobSet name")
    volume = common.check_k8s_name(volume, "--volume")
    ds = get_dataset(j.config["dataset"], j.config["dataset_version"])
    img = image or f"aios-lab-trainer:{common.requirement().split('==')[1]}"
    document = {
        "job": j.name,
        "train": {**train, "n_devices": pods * k, "num_processes": pods, "coordinator": None, "process_id": 0},
        "dataset": {"path": dataset_uri or f"{MOUNT}/datasets/{ds.name}/v{ds.version}", "hash": ds.hash},
        "checkpoint_dir": checkpoint_dir or f"{MOUNT}/jobs/{j.name}/checkpoints",
    }
    docs = manifests(jobset, j.name, document, pods, k, kind, img, volume, max_restarts)
    files = {
        "jobset.yaml": common.dump_all(docs),
        "job.json": json.dumps(document, indent=1, sort_keys=True) + "\n",
        "Dockerfile": common.dockerfile(
            '"jax[k8s]"' if kind == "cpu" else f'"jax[k8s]" "jax[{"cuda12" if kind == "gpu" else "tpu"}]"',
            [],
            ["python", "-m", "aios_lab.export.pod_worker"],
            {},
        ),
        "README.md": readme(jobset, j.name, ds, document, pods, k, kind, img, volume),
    }
    with common.staged_dir(directory) as tmp:
        for fname, text in files.items():
            (tmp / fname).write_text(text)
    from ..catalog import catalog

    catalog().audit("export.jobset", j.name, directory=str(directory), pods=pods, devices_per_pod=k)
    return JobSetExport(j.name, jobset, Path(directory).expanduser().absolute(), pods, k, kind, img, sorted(files))


def _whole(flag: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{flag} must be a whole number from {lo} to {hi}, not {value!r}")
    return value


def manifests(
    name: str, job: str, document: dict, pods: int, k: int, kind: str, image: str, volume: str, max_restarts: int
) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding, ConfigMap and JobSet, in the order ``kubectl apply`` needs them."""
    lab = common.labels("jobset", name, **{"aios-lab/job": common.k8s_name(job)})
    account = f"{name}-worker"
    rules = [
        {"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
    ]
    resources: dict[str, Any] = {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    env = [{"name": "JAX_PLATFORMS", "value": kind}]
    if kind == "cpu":  # K forced host devices per pod (what the tests use on one machine)
        env.append({"name": "XLA_FLAGS", "value": f"--xla_force_host_platform_device_count={k}"})
        resources["requests"]["cpu"] = str(k)
    else:
        resources["limits"][ACCELERATORS[kind]] = k
        resources["requests"][ACCELERATORS[kind]] = k
    pod = {
        "serviceAccountName": account,
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "worker",
                "image": image,
                "args": ["--config", f"{CONFIG_DIR}/job.json"],
                "ports": [{"name": "jax-coord", "containerPort": COORDINATOR_PORT, "protocol": "TCP"}],
                "env": env,
                "resources": resources,
                "volumeMounts": [
                    {"name": "job", "mountPath": CONFIG_DIR, "readOnly": True},
                    {"name": "shared", "mountPath": MOUNT},
                ],
            }
        ],
        "volumes": [
            {"name": "job", "configMap": {"name": f"{name}-job"}},
            {"name": "shared", "persistentVolumeClaim": {"claimName": volume}},
        ],
    }
    jobset = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": name, "labels": lab},
        "spec": {
            # a lost pod restarts the whole gang, which resumes from the latest checkpoint
            "failurePolicy": {"maxRestarts": max_restarts},
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
            "replicatedJobs": [
                {
                    "name": REPLICATED_JOB,
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "parallelism": pods,
                            "completions": pods,
                            "completionMode": "Indexed",
                            "backoffLimit": 0,
                            "template": {"metadata": {"labels": lab}, "spec": pod},
                        }
                    },
                }
            ],
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "labels": lab}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": account, "labels": lab},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": account, "labels": lab},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-job", "labels": lab},
            "data": {"job.json": json.dumps(document, indent=1, sort_keys=True)},
        },
        jobset,
    ]


def readme(name: str, job: str, ds: Any, document: dict, pods: int, k: int, kind: str, image: str, volume: str) -> str:
    coordinator = f"{name}-{REPLICATED_JOB}-0-0.{name}:{COORDINATOR_PORT}"
    data, ckpt = document["dataset"]["path"], document["checkpoint_dir"]
    cpu_note = f"Each pod sees {k} CPU devices through XLA_FLAGS." if kind == "cpu" else ""
    return f"""# Job `{job}` as a JobSet: {pods} pods x {k} {kind} devices

Files: `jobset.yaml` (ServiceAccount, Role and RoleBinding `{name}-worker`, ConfigMap `{name}-job`, JobSet
`{name}`), `job.json` (the job document in the ConfigMap), `Dockerfile` (the worker image).

## Run it

1. Build and push the worker image, then put its name in `jobset.yaml` if it differs from `{image}`:

       docker build -t REGISTRY/{image} .       # --build-arg AIOS_LAB=... installs aios_lab from elsewhere
       docker push REGISTRY/{image}

2. A ReadWriteMany PersistentVolumeClaim `{volume}` (mounted at `{MOUNT}` in every pod) holds the data:
   copy the dataset version `{ds.name}@{ds.version}` (the folder `{ds.path}`) to `{data}`, and, to resume
   where the local job stopped, its checkpoints to `{ckpt}`. Or export again with `--dataset-uri` and
   `--checkpoint-dir` set to `gs://` or `s3://` URIs (zarr, orbax and tensorstore read them; the image then
   needs `gcsfs` or `s3fs`).
3. The JobSet controller must be installed (jobset.x-k8s.io/v1alpha2). Then `kubectl apply -f jobset.yaml`.
   `kubectl logs` of pod 0 prints one JSON line per metrics row and the summary at the end.

## How the pods find each other

The JobSet runs one Indexed Job of {pods} pods (`parallelism` = `completions` = {pods}). In each pod,
`jax.distributed.initialize()` finds everything itself (JAX's Kubernetes detection, the `jax[k8s]` extra):
the coordinator is pod 0 at `{coordinator}` (JobSet's DNS hostnames and headless service; TCP port
{COORDINATOR_PORT} is declared on the container), the process count is the Job's `parallelism`, and each
pod's process id is its `JOB_COMPLETION_INDEX` (environment variable set by Kubernetes). That detection reads
the pod, its Job and the services through the Kubernetes API, hence the ServiceAccount with get/list on
pods and services and get on jobs. {cpu_note}
A lost pod fails the Job; the JobSet restarts the gang (up to `maxRestarts`) and training resumes from the
latest checkpoint in `{ckpt}`.

## What was and was not exercised

{EXERCISED}
"""


EXERCISED = """Tested here, without a Kubernetes cluster: the manifests validate against the Kubernetes 1.37 schemas
(`kubernetes-validate`, strict: no unknown fields) and the JobSet against the JobSet CRD's OpenAPI schema
(jobset.x-k8s.io/v1alpha2, unknown fields refused); `pod_worker` trained the exported job document as 2
processes on one machine with jax.distributed given the coordinator by hand. Not exercised: building
the image, a real cluster, the JobSet controller, JAX's Kubernetes auto-detection, the volume."""
