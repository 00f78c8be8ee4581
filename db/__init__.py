"""The database: schema and laws (SQL), migrations, and tenant-scoped access for services."""
