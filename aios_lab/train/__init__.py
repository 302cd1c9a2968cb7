"""Training core: models, sharding rules, the jitted step, orbax checkpoints and the loop.

Library code with no knowledge of the catalog's jobs: ``trainer.train(config, ...)`` is what a
worker process calls. Nothing here imports zarr, so the step and mesh run on bare accelerator hosts.
"""
