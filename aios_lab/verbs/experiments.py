"""Verbs for experiments: sweep, sweeps, sweep cancel, compare, profile."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, argument_group, magic_arguments

from ..jobs.limits import number
from ..render import Table, Text, age
from . import verb
from .jobs import _model_config
from .lm import unquote  # IPython's argument splitting keeps the quotes of --over "lr=1e-4..1e-2:log, width=64|128"


@magic_arguments()
@argument("sweep", help="a new sweep name (its trials are jobs NAME-t00, NAME-t01, ...), or an existing one to show")
@argument("--dataset", help="a declared dataset (NAME or NAME@VERSION)")
@argument(
    "--model", default="mlp", help="a %%%%aios model name, a built-in (mlp, cnn, gpt) or module:attr (default mlp)"
)
@argument(
    "--over",
    help='the search space: "lr=1e-4..1e-2:log, batch=64|128|256, width=128|256" (LO..HI ranges, :log scale, '
    "A|B choices; training options or model settings)",
)
@argument("--trials", default="16", help="how many trials (default 16)")
@argument(
    "--metric",
    default="val.loss",
    help="SPLIT.NAME the sweep optimises: val.loss, val.accuracy, ... (default val.loss)",
)
@argument("--goal", choices=("min", "max"), help="min or max (default: the metric's better direction)")
@argument_group("search and early stopping")
@argument("--sampler", default="tpe", choices=("tpe", "random", "grid"), help="how settings are picked (default tpe)")
@argument(
    "--early-stop",
    choices=("asha", "hyperband", "none"),
    help="stop hopeless trials at evaluations: asha (successive halving) or hyperband (default none)",
)
@argument("--seed", default="0", help="seed of the sampler (default 0)")
@argument_group("devices and training")
@argument("--devices-per-trial", default="1", help="devices each trial trains on (default 1)")
@argument("--parallel", help="at most this many trials at once (default: as many as the devices hold)")
@argument("--priority", default="0", help="queue priority of the trials (default 0)")
@argument("--config", help="model settings shared by all trials, e.g. depth=2")
@argument("--steps", help="training steps of each trial")
@argument("--batch", help="global batch size (unless --over varies it)")
@argument("--lr", help="peak learning rate (unless --over varies it)")
@argument("--eval-every", help="steps between evaluations: the rungs of early stopping")
@argument("--wait", action="store_true", help="block until the sweep ends (the display still updates)")
def sweep(args, ctx):
    """Tune a model: trials over a search space as ordinary jobs, sampled and pruned by Optuna; a live view."""
    from ..sweeps import sweep as start

    creating = args.dataset is not None or args.over is not None
    if not creating:
        sw = start(args.sweep)
    else:
        name, _, version = (args.dataset or "").partition("@")
        options = {k: number(getattr(args, k)) for k in ("steps", "batch", "lr", "eval_every") if getattr(args, k)}
        sw = start(
            args.sweep,
            name or None,
            dataset_version=number(version) if version else None,
            model=args.model,
            model_config=_model_config(unquote(args.config)),
            over=unquote(args.over),
            trials=number(args.trials),
            metric=unquote(args.metric),
            goal=args.goal,
            early_stop=args.early_stop,
            devices_per_trial=number(args.devices_per_trial),
            sampler=args.sampler,
            parallel=number(args.parallel) if args.parallel else None,
            priority=number(args.priority),
            seed=number(args.seed),
            **options,
        )
    if ctx.interactive:
        if args.wait:
            from IPython.display import display

            view = sw.widget()
            display(view)
            view.wait()
            sw.shown = True
        return sw
    if args.wait:
        sw.wait()
    return Text(str(sw.table()))


@magic_arguments()
@argument("sweep")
def sweep_cancel(args, ctx):
    """Cancel a sweep: every trial checkpoints and stops, no new trial starts."""
    from ..sweeps import sweep as get

    state = get(args.sweep).cancel()
    return Text(f"sweep {args.sweep}: cancel requested ({state}); its trials checkpoint and stop within seconds")


@magic_arguments()
def sweeps(args, ctx):
    """Table of sweeps: state, metric, trials, best so far, age."""
    from ..sweeps import sweeps as all_sweeps

    rows = []
    for sw in all_sweeps():
        j = sw.to_json(curves=False)
        best = j["best"]
        rows.append(
            (
                j["name"],
                j["state"],
                f"{j['metric']} ({j['goal']})",
                f"{len(j['trials'])}/{j['trials_total']}",
                ", ".join(f"{n} {s}" for s, n in sorted(j["counts"].items())),
                best["job"] if best else None,
                best["value"] if best else None,
                j["device_steps"],
                age(j["created"]),
            )
        )
    return Table(
        ["sweep", "state", "metric", "trials", "states", "best", "value", "device-steps", "age"],
        rows,
        empty='no sweeps yet: %aios sweep NAME --dataset D --model mlp --over "lr=1e-4..1e-2:log" --trials 8',
    )


@magic_arguments()
@argument("jobs", nargs="+", help="jobs to compare; a sweep's name stands for its --top best trials (finished first)")
@argument("--top", default="3", help="trials of a sweep to compare (default 3)")
def compare(args, ctx):
    """Jobs side by side: overlaid curves by step and wall time, final and best metrics, settings that differ."""
    from ..compare import compare as run
    from ..jobs import records
    from ..sweeps import store
    from ..sweeps.handle import Sweep

    names = []
    for name in args.jobs:
        if records.row(name) is None and store.row(name) is not None:
            names += [t.job for t in Sweep(name).top(number(args.top))]
        else:
            names.append(name)
    result = run(*names)
    return result if ctx.interactive else Text(str(result))


@magic_arguments()
@argument("job", help="a running job")
@argument("--steps", default="20", help="steps to trace (default 20)")
@argument("--timeout", default="300", help="seconds to wait for the trace (default 300)")
def profile(args, ctx):
    """Trace a running job's steps with jax.profiler (no restart); show where step time goes; keep the trace."""
    from ..profiling import profile as run

    result = run(args.job, steps=number(args.steps), timeout=float(args.timeout))
    return result if ctx.interactive else Text(str(result))


verb("sweep")(sweep)
verb("sweep cancel")(sweep_cancel)
verb("sweeps")(sweeps)
verb("compare")(compare)
verb("profile")(profile)
