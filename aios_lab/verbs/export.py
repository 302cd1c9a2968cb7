"""The export verb: ``aios export MODEL[:ALIAS] --to kserve DIR`` and ``aios export JOB --to jobset DIR``."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Text
from . import verb


@magic_arguments()
@argument("what", help="MODEL[:ALIAS|:VERSION] for --to kserve; a job name for --to jobset")
@argument("--to", required=True, choices=["kserve", "jobset"], help="what to write: KServe or JobSet files")
@argument("directory", help="a new (or empty) folder to write into")
@argument("--image", help="the container image the manifests name (default: a local tag; push your own)")
@argument("--name", help="the Kubernetes resource name (default: from the model or job name)")
@argument("--min-replicas", type=int, help="kserve: predictor replicas kept running (default 1)")
@argument("--pods", type=int, help="jobset: pods, one process each (default: the job's processes)")
@argument("--devices-per-pod", type=int, help="jobset: devices per pod (default: the job's devices / pods)")
@argument("--accelerator", choices=["cpu", "gpu", "tpu"], help="jobset: device kind (default: the job's)")
@argument("--volume", help="jobset: ReadWriteMany PersistentVolumeClaim for data and checkpoints (aios-shared)")
@argument("--checkpoint-dir", help="jobset: where the pods keep checkpoints (a shared path or gs://, s3:// URI)")
@argument("--dataset-uri", help="jobset: where the pods read the dataset version (a shared path or URI)")
def export(args, ctx):
    """Write Kubernetes files: a KServe build context and InferenceService, or a JobSet for a training job."""
    from ..errors import InvalidInput
    from ..export import export as run

    allowed = OPTIONS[args.to]
    given = {k: getattr(args, k) for k in {*OPTIONS["kserve"], *OPTIONS["jobset"]} if getattr(args, k) is not None}
    wrong = sorted(set(given) - set(allowed))
    if wrong:
        raise InvalidInput(f"{', '.join('--' + k.replace('_', '-') for k in wrong)} do not apply to --to {args.to}")
    return Text(str(run(args.what, to=args.to, directory=args.directory, **given)))


OPTIONS = {
    "kserve": ("image", "name", "min_replicas"),
    "jobset": ("image", "name", "pods", "devices_per_pod", "accelerator", "volume", "checkpoint_dir", "dataset_uri"),
}

verb("export")(export)
