"""Refusals a service gives on purpose. Activities map these to non-retryable failures."""

from __future__ import annotations


class GovernanceRefusal(Exception):
    """A rule said no: retrying the same request can never succeed."""


class NotFoundError(GovernanceRefusal):
    """The subject does not exist for this tenant."""


class ArtifactMissingError(GovernanceRefusal):
    """The artifact named for a model version is not in the object store."""


class ArtifactHashMismatchError(GovernanceRefusal):
    """The artifact's bytes do not hash to the value claimed for them."""


class SignatureInvalidError(GovernanceRefusal):
    """A stored or presented signature does not verify."""


class BiasAuditRequiredError(GovernanceRefusal):
    """Promotion to SHADOW needs a passed, validly signed bias audit."""


class IllegalTransitionRefusal(GovernanceRefusal):
    """The status machine does not allow the requested move."""
