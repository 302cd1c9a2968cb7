"""Verbs for training jobs: train, jobs, job, logs, cancel, resume."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, argument_group, magic_arguments

from ..errors import AiosError
from ..render import Table, Text, age, fmt
from . import verb


def _model_config(pairs: str | None) -> dict:
    """'width=256,depth=2' -> {"width": 256, "depth": 2}."""
    out = {}
    for pair in filter(None, (pairs or "").split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise AiosError(f"--config takes KEY=VALUE pairs separated by commas, not {pair!r}")
        for cast in (int, float):
            try:
                out[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = value.strip()
    return out


@magic_arguments()
@argument("job", help="a new job name")
@argument("--dataset", required=True, help="a declared dataset (NAME or NAME@VERSION)")
@argument("--model", required=True, help="a %%%%aios model name, a built-in (mlp, cnn, gpt), or module:attr")
@argument(
    "--config",
    help="model settings, e.g. width=512,depth=3 (mlp: width, depth; cnn: channels, "
    "hidden; gpt: d_model, n_layers, n_heads, block_size)",
)
@argument("--task", choices=["classification", "regression", "lm"], help="default: from the dataset")
@argument_group("devices and schedule")
@argument("--devices", default="all", help="N or all (default all)")
@argument("--priority", type=int, default=0, help="higher starts first when devices are busy")
@argument("--processes", type=int, default=1, help="worker processes under jax.distributed (default 1)")
@argument("--max-retries", type=int, help="automatic resumes after a worker dies (default 2)")
@argument("--wait", action="store_true", help="block until the job ends (the display still updates)")
@argument_group("optimisation")
@argument("--steps", type=int, default=500)
@argument("--batch", type=int, default=128, help="global batch size")
@argument("--lr", type=float, default=1e-3)
@argument("--optimizer", default="adamw", choices=["adamw", "adam", "sgd"])
@argument(
    "--shard", default="dp", choices=["dp", "fsdp"], help="dp replicates params; fsdp shards params and optimizer state"
)
@argument("--precision", default="fp32", choices=["fp32", "bf16"])
@argument("--checkpoint-every", type=int, help="steps between checkpoints (default steps/10)")
@argument("--eval-every", type=int, help="steps between evaluations on val (default steps/10)")
@argument("--seed", type=int, default=0)
def train(args, ctx):
    """Launch JAX training as a background job sharded over the devices; returns a live handle."""
    from ..jobs import train as start

    name, _, version = args.dataset.partition("@")
    job = start(
        args.job,
        dataset=name,
        dataset_version=int(version) if version else None,
        model=args.model,
        model_config=_model_config(args.config),
        task=args.task,
        devices=args.devices,
        priority=args.priority,
        processes=args.processes,
        max_retries=args.max_retries,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        optimizer=args.optimizer,
        shard=args.shard,
        precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        seed=args.seed,
    )
    return _follow(job, ctx, args.wait)


def _follow(job, ctx, wait: bool):
    """In a notebook: the Job handle (it displays as the live widget); in a terminal: a line of text."""
    if ctx.interactive:
        if wait:
            from IPython.display import display

            view = job.widget()
            display(view)
            view.wait()
            job.shown = True  # already on screen: the returned handle does not draw it twice
        return job
    if wait:
        job.wait()
    return Text(_describe(job))


def _describe(job) -> str:
    j = job.to_json()
    line = (
        f"job {j['name']}: {j['state']}, step {j['step']}/{j['steps']} on {j['n_devices']} {j['device_kind']} device(s)"
    )
    if j.get("error"):
        line += f"\n  {j['error']}"
    return line


@magic_arguments()
def jobs(args, ctx):
    """Table of jobs: state, step/steps, loss, accuracy, devices, age."""
    from ..jobs import jobs as all_jobs

    rows = []
    for job in all_jobs():
        j = job.to_json()
        rows.append(
            (
                j["name"],
                j["state"],
                f"{j['step']}/{j['steps']}",
                j["loss"],
                j["accuracy"],
                fmt(j["devices"]) if j["devices"] else f"({j['n_devices']})",
                j["model"],
                j["dataset"],
                age(j["created"]),
            )
        )
    return Table(
        ["job", "state", "step", "loss", "val acc", "devices", "model", "dataset", "age"],
        rows,
        empty="no jobs yet: %aios train JOB --dataset D --model mlp",
    )


@magic_arguments()
@argument("job")
def job(args, ctx):
    """A live view of a job: progress, loss/accuracy curves, cancel."""
    from ..jobs import job as get

    return _follow(get(args.job), ctx, wait=False)


@magic_arguments()
@argument("job")
@argument("--tail", type=int, default=50, help="lines from the end (default 50)")
def logs(args, ctx):
    """The job's worker log."""
    from ..jobs import job as get

    return Text(get(args.job).log_tail(args.tail) or f"job {args.job} has no log yet")


@magic_arguments()
@argument("job")
def cancel(args, ctx):
    """Checkpoint, then stop the job (a queued job is dropped from the queue)."""
    from ..jobs import job as get

    j = get(args.job)
    state = j.cancel()
    return Text(
        f"job {args.job}: cancel requested ({state}); the worker checkpoints and stops within seconds"
        if state == "running"
        else f"job {args.job}: {state}"
    )


@magic_arguments()
@argument("job")
@argument("--steps", type=int, help="a new total number of steps")
@argument("--wait", action="store_true")
def resume(args, ctx):
    """Continue a stopped job from its latest checkpoint."""
    from ..jobs import job as get

    return _follow(get(args.job).resume(steps=args.steps), ctx, args.wait)


@magic_arguments()
def devices(args, ctx):
    """Every device, the job holding it, and the queue waiting for devices."""
    from ..jobs import devices as inventory

    d = inventory()
    rows = [(x["id"], x["name"], x["job"] or "free") for x in d["devices"]]
    table = Table(["device", "name", "held by"], rows, title=f"{len(rows)} {d['kind']} device(s)")
    if d["queue"]:
        table.title += " · queue: " + ", ".join(f"{q['name']} ({q['n_devices']})" for q in d["queue"])
    return table


verb("train")(train)
verb("jobs")(jobs)
verb("job")(job)
verb("logs")(logs)
verb("cancel")(cancel)
verb("resume")(resume)
verb("devices")(devices)
