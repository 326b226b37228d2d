"""The CoBSAT benchmark: its tasks and prompts (`tasks`), the judge (`judge`), and the harness that
generates, judges and reports (`harness`, run as `python -m train.cobsat`)."""
