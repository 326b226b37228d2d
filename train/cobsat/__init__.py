"""The CoBSAT benchmark: its tasks and prompts (`tasks`), the judge (`judge`), the options (`options`, declared
like the training tools'), and the harness that generates, judges and reports (`harness`, run as
`python -m train.cobsat`)."""
