"""Research tooling, run from the repo root as `python -m train.<tool>` (not installed as a package)."""
