"""What tests and the acceptance battery hand to the ``rai`` processes they start."""

from __future__ import annotations

import os

from settings import Settings


def rai_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """``settings`` as the RAI_* environment of a ``rai`` process: the caller's environment
    without its own RAI_* variables, then every set field of ``settings``, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAI_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"RAI_{name.upper()}"] = str(value)
    env.update(extra)
    return env
