"""The pipeline core: each step of a night as a function that Dagster assets and the backtest both call."""
