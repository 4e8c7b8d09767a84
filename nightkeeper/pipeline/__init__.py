"""The pipeline core: each step of a night as a plain function ``(config, connection, night, *inputs) -> StepResult``.

Dagster assets call these steps in production; ``nightkeeper backtest`` calls the same functions with a simulated
clock. Partition tables in ``StepResult.tables`` are stored by the caller through
``nightkeeper.warehouse.store_partition`` (the IO manager uses it too), so both drivers write identical tables.
"""
