"""Supervisor and sweep drivers: the processes that run stored sweeps."""
