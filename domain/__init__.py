"""Pure rules and math of Level D: no I/O, no clocks."""
