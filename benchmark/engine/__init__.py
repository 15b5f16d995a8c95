"""Training, evaluation, metrics, benchmarks, distributed setup."""
