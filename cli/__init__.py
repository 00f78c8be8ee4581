"""The ``rai`` command: one console script, one module per subcommand group."""
