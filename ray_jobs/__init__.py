"""Thin Ray entrypoints (`python -m ray_jobs.train`, `python -m ray_jobs.tune`)."""
