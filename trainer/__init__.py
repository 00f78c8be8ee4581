"""The reference training job: ``python -m trainer``.

It reads a dataset snapshot (JSON Lines of learning events) from the datasets bucket at one
pinned version, checks its SHA-256, fits a ridge regression of the observed outcome on the event
features (``trainer.model``, pure numpy), writes the model artifact and its metrics to the
registry bucket, writes a result file and posts an Ed25519-signed completion callback
(``trainer.job``). The same entrypoint runs as a local detached process
(``adapters.localjobs``) or as the container of a Kubernetes Job.

Nothing imports this package: its contracts with the platform (command line, environment,
result, callback, model artifact) are in ``domain.training`` and ``domain.ridge``.
"""
