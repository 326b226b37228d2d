"""The ThinkDiff ComfyUI nodes: thin V3 node classes over `thinkdiff_core`.

Modules named `comfy_*` and the node modules (`lvlm`, `clip`, `conditioning`) import ComfyUI;
`operations`, `model_folders` and `environment` do not, so the default test suite (which has no
ComfyUI) covers everything the nodes do below their ComfyUI plumbing. This file stays empty of
imports for the same reason: importing one plain module must not pull in ComfyUI.
"""
