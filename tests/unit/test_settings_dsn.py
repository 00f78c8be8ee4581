"""The logins services derive from the administrative DSN: rai_app for the services, rai_metrics
for the worker's metrics collector, each with its own password, never the administrator's."""

from __future__ import annotations

from pydantic import SecretStr

from settings import Settings, app_dsn_for, metrics_dsn_for


def test_each_login_keeps_the_server_and_database_and_drops_the_admin_credentials() -> None:
    admin = "postgresql://postgres:admin-secret@db.example.com:6543/rai?sslmode=require"
    assert app_dsn_for(admin, SecretStr("a/p@ss")) == (
        "postgresql://rai_app:a%2Fp%40ss@db.example.com:6543/rai?sslmode=require"
    )
    assert metrics_dsn_for(admin, SecretStr("m:p")) == (
        "postgresql://rai_metrics:m%3Ap@db.example.com:6543/rai?sslmode=require"
    )
    assert metrics_dsn_for("postgresql://postgres@[::1]:5432/rai") == (
        "postgresql://rai_metrics@[::1]:5432/rai"
    )


def test_the_metrics_login_is_derived_unless_given() -> None:
    derived = Settings(
        database_url="postgresql://postgres@db:5432/rai",
        app_database_url=None,  # whatever the environment says
        metrics_database_url=None,
        app_db_password=SecretStr("app"),
        metrics_db_password=SecretStr("metrics"),
    )
    assert derived.resolved_app_database_url() == "postgresql://rai_app:app@db:5432/rai"
    assert derived.resolved_metrics_database_url() == "postgresql://rai_metrics:metrics@db:5432/rai"
    given = derived.model_copy(
        update={"metrics_database_url": "postgresql://rai_metrics:x@elsewhere:5432/rai"}
    )
    assert given.resolved_metrics_database_url() == "postgresql://rai_metrics:x@elsewhere:5432/rai"
