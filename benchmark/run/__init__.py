"""One job of a run-all: train -> eval -> eval ms+flip -> bench for one row and seed, its state file
and its result records. Launchers decide where a job runs; this package decides what it does."""
