"""Verbs for training jobs: train, jobs, job, job delete, logs, cancel, resume, devices."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from IPython.core.magic_arguments import argument, argument_group, magic_arguments

from .. import metric_names as mn
from ..errors import InvalidInput
from ..jobs.job import where as job_where
from ..jobs.limits import number
from ..render import Table, Text, age, nbytes
from . import verb


class _Lazy(Sequence):
    """A tuple read from training code the first time it is needed (parsing ``train`` or printing its help),
    so that listing jobs never imports JAX."""

    def __init__(self, load: Callable[[], Sequence[Any]]):
        self._load, self._items = load, None

    def _get(self) -> tuple:
        if self._items is None:
            self._items = tuple(self._load())
        return self._items

    def __getitem__(self, i):
        return self._get()[i]

    def __len__(self) -> int:
        return len(self._get())


class _Default:
    """A flag's default read where it is kept, only when the help is shown; a flag left at it passes
    nothing on, so the API applies the same default."""

    def __init__(self, read: Callable[[], Any]):
        self.read = read

    def __str__(self) -> str:
        return str(self.read())


def _from(module: str, attr: str) -> Callable[[], Any]:
    return lambda: getattr(importlib.import_module(module, __package__), attr)


def _choices(field: str) -> Callable[[], Sequence[str]]:
    """The values a training flag takes (``train.config.CHOICES``: optim.OPTIMIZERS, sharding.MODES, ...)."""
    return lambda: _from("..train.config", "CHOICES")()[field]


def _train_default(field: str) -> Callable[[], Any]:
    """TrainConfig's default for a flag (None: it follows --steps)."""

    def read() -> Any:
        value = _from("..train.config", "TrainConfig")().defaults().get(field)
        if value is None and field == "checkpoint_every":  # derived, with a time floor between saves
            return f"a tenth of the run, at least {_from('..train.config', 'CHECKPOINT_MIN_S')():g} s apart"
        return "follows --steps" if value is None else value

    return read


class option(argument):
    """An ``argument`` whose choices and default are read from where they are kept (see ``_late``)."""

    def __init__(self, *args, choices_from: Callable[[], Sequence[Any]] | None = None, default_from=None, **kwds):
        super().__init__(*args, **kwds)
        self.choices_from, self.default_from = choices_from, default_from
        self.action = None

    def add_to_parser(self, parser, group):
        self.action = (group or parser).add_argument(*self.args, **self.kwds)


def _late(fn):
    """Give a verb's ``option`` flags their choices and defaults after IPython has built (and formatted) its
    parser, so that only parsing or printing the help reads them (and ``aios jobs`` never imports JAX)."""
    for deco in fn.decorators:
        if isinstance(deco, option):
            if deco.choices_from is not None:
                deco.action.choices = _Lazy(deco.choices_from)
            deco.action.default = _Default(deco.default_from or _train_default(deco.action.dest))
    return fn


def _given(args, fn) -> dict[str, Any]:
    """The ``option`` flags of verb ``fn`` that the user set, numbers read from their text (those left at
    their default are not passed on, so the API applies the same default)."""
    values = {d.action.dest: getattr(args, d.action.dest) for d in fn.decorators if isinstance(d, option)}
    return {k: number(v) for k, v in values.items() if not isinstance(v, _Default)}


def _model_config(pairs: str | None) -> dict:
    """'width=256,depth=2' -> {"width": 256, "depth": 2}."""
    out = {}
    for pair in filter(None, (pairs or "").split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"--config takes KEY=VALUE pairs separated by commas, not {pair!r}")
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
@argument(
    "--model",
    required=True,
    help="a %%%%aios model name, a built-in (mlp, cnn, gpt), module:attr, or an imported language model "
    "NAME[:VERSION|ALIAS] (training starts from its weights)",
)
@argument(
    "--config",
    help="model settings, e.g. width=512,depth=3 (mlp: width, depth; cnn: channels, "
    "hidden; gpt: d_model, n_layers, n_heads, block_size)",
)
@option("--task", metavar="TASK", choices_from=_choices("task"), help="%(choices)s (default: the dataset's)")
@argument_group("devices and schedule")
@argument("--devices", default="all", help="N or all (default all)")
@option(
    "--priority",
    metavar="P",
    default_from=_from("..jobs.policy", "DEFAULT_PRIORITY"),
    help="higher starts first when devices are busy (default %(default)s)",
)
@option(
    "--processes",
    metavar="N",
    default_from=_train_default("num_processes"),
    help="worker processes under jax.distributed (default %(default)s)",
)
@option(
    "--max-retries",
    metavar="N",
    default_from=_from("..jobs.scheduler", "MAX_AUTO_RESUMES"),
    help="automatic resumes after a worker dies (default %(default)s)",
)
@argument("--wait", action="store_true", help="block until the job ends (the display still updates)")
@argument_group("on a Ray cluster (%%%%aios cluster connect first)")
@argument("--on", choices=("local", "ray"), help="where the job runs (default local)")
@argument("--hosts", metavar="H", help="--on ray: processes, one per host")
@argument("--devices-per-host", metavar="K", help="--on ray: devices of each host's process")
@argument(
    "--checkpoint-dir",
    metavar="DIR",
    help="--on ray: checkpoints go to DIR/JOB, a path every host and this machine share or a gs:// or s3:// "
    "URI (default: the job's folder here)",
)
@argument_group("optimisation")
@option("--steps", metavar="N", help="total training steps (default %(default)s)")
@option("--batch", metavar="B", help="global batch size (default %(default)s)")
@option("--lr", metavar="LR", help="peak learning rate (default %(default)s)")
@option(
    "--optimizer",
    metavar="NAME",
    choices_from=_choices("optimizer"),
    help="%(choices)s (default %(default)s)",
)
@option(
    "--shard",
    metavar="MODE",
    choices_from=_choices("shard"),
    help="%(choices)s: dp replicates params, fsdp shards params and optimizer state (default %(default)s)",
)
@option("--precision", metavar="P", choices_from=_choices("precision"), help="%(choices)s (default %(default)s)")
@option(
    "--checkpoint-every",
    metavar="K",
    help="steps between checkpoints, exactly (default %(default)s)",
)
@option("--eval-every", metavar="K", help="steps between evaluations on val (default %(default)s)")
@option("--warmup", metavar="K", help="steps of linear learning-rate warm-up (default %(default)s)")
@option("--weight-decay", metavar="W", help="decoupled weight decay of matrices (default %(default)s)")
@option("--clip", metavar="C", help="clip gradients to this global norm, 0 for off (default %(default)s)")
@option("--seed", metavar="S", help="seed of the initialisation and the batch order (default %(default)s)")
@argument_group("language models (--model NAME[:VERSION] of an imported model)")
@argument("--init-from", metavar="MODEL", help="start from this registry version of the same architecture instead")
@option(
    "--lora",
    metavar="SPEC",
    default_from=lambda: "off",
    help="train low-rank adapters only, the base frozen: r=16,alpha=32,targets=attn|mlp|all "
    "(or projections such as q|v),base=float|int8 (default %(default)s)",
)
@option(
    "--remat",
    action="store_true",
    help="recompute each layer's activations in the backward pass: less memory, more compute",
)
def train(args, ctx):
    """Launch JAX training as a background job sharded over the devices; returns a live handle."""
    from ..jobs import train as start

    name, _, version = args.dataset.partition("@")
    job = start(
        args.job,
        dataset=name,
        dataset_version=number(version) if version else None,
        model=args.model,
        model_config=_model_config(args.config),
        devices=number(args.devices) if args.on != "ray" or args.devices != "all" else None,
        on=args.on,
        hosts=number(args.hosts) if args.hosts is not None else None,
        devices_per_host=number(args.devices_per_host) if args.devices_per_host is not None else None,
        checkpoint_dir=args.checkpoint_dir,
        init_from=args.init_from,
        **_given(args, train),
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
    on = (
        f"on ray {j['gang']['hosts']} host(s) x {j['gang']['devices_per_host']} {j['gang']['kind']} device(s)"
        if j.get("gang")
        else f"on {j['n_devices']} {j['device_kind']} device(s)"
    )
    line = f"job {j['name']}: {j['state']}, step {j['step']}/{j['steps']} {on}"
    if j.get("error"):
        line += f"\n  {j['error']}"
    return line


@magic_arguments()
def jobs(args, ctx):
    """Table of jobs: state, step/steps, loss, accuracy, devices, disk use, age."""
    from ..jobs import jobs as all_jobs

    rows = []
    for job in all_jobs():
        j = job.to_json()
        rows.append(
            (
                j["name"],
                j["state"],
                f"{j['step']}/{j['steps']}",
                j[mn.LOSS],
                j[mn.ACCURACY],
                job_where(j),
                j["model"],
                j["dataset"],
                nbytes(j["disk_bytes"] or 0),
                age(j["created"]),
            )
        )
    return Table(
        ["job", "state", "step", "loss", "val acc", "devices", "model", "dataset", "disk", "age"],
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
@argument("--force", action="store_true", help="also when queued, or when a model version's lineage names it")
def job_delete(args, ctx):
    """Delete a stopped job: its checkpoints, log, variants, metrics and row (a running job: cancel it first)."""
    from ..jobs import delete_job

    freed = delete_job(args.job, force=args.force)
    return Text(f"job {args.job} deleted ({nbytes(freed)} freed)")


@magic_arguments()
@argument("job")
@argument("--tail", default=50, help="lines from the end (default 50)")
def logs(args, ctx):
    """The job's worker log."""
    from ..jobs import job as get

    return Text(get(args.job).log_tail(number(args.tail)) or f"job {args.job} has no log yet")


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
@argument("--steps", help="a new total number of steps")
@argument("--wait", action="store_true")
def resume(args, ctx):
    """Continue a stopped job from its latest checkpoint."""
    from ..jobs import job as get

    return _follow(get(args.job).resume(steps=number(args.steps)), ctx, args.wait)


@magic_arguments()
def devices(args, ctx):
    """Every device, the job holding it, and the queue waiting for devices."""
    from ..jobs import devices as inventory

    d = inventory()
    rows = [(x["id"], x["name"], x["job"] or "free") for x in d["devices"]]
    table = Table(["device", "name", "held by"], rows, title=f"{len(rows)} {d['kind']} device(s)")
    if d["queue"]:
        asks = lambda q: f"ray {q['hosts']}x{q['devices_per_host']}" if q["on"] == "ray" else q["n_devices"]
        table.title += " · queue: " + ", ".join(f"{q['name']} ({asks(q)})" for q in d["queue"])
    if d.get("cluster"):
        c = d["cluster"]
        table.title += f" · Ray cluster {c['address']}: {len(c['nodes'])} node(s) (`%aios cluster`)"
    return table


verb("train")(_late(train))
verb("jobs")(jobs)
verb("job")(job)
verb("job delete")(job_delete)
verb("logs")(logs)
verb("cancel")(cancel)
verb("resume")(resume)
verb("devices")(devices)
