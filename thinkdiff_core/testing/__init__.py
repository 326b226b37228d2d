"""Tiny offline stand-ins of the real models, for the shipped `--tiny` modes, the demo, tests and benchmarks.

Not part of the product's runtime: nothing here is imported unless a `--tiny` mode, a test or a
benchmark asks for it.
"""
