"""The acceptance battery (issue 13): ``python -m tests.acceptance`` starts the real local stack
parts the way the tests do, runs each scenario against them, and writes
``acceptance-report.md`` and ``acceptance-report.json``.

A scenario's *observed* figures are counted afterwards from what the database, S3 and Temporal
hold, never copied from what the scenario meant to do.
"""
