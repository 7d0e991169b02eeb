"""The sweep engine: Ray Tune + Optuna over trainer runs, recorded in the store."""
