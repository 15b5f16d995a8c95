"""Launchers: plan recipes into jobs, run them locally or on SLURM through submitit, report status."""
