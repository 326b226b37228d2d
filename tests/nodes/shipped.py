"""What the pack ships beside its nodes, as the tests see it: the example workflows and their index."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FOLDER = REPO / "workflows"
TEMPLATE_INDEX = WORKFLOW_FOLDER / "index.json"
WORKFLOWS = sorted(path for path in WORKFLOW_FOLDER.glob("*.json") if path != TEMPLATE_INDEX)
"""The editor-format workflows (index.json beside them is the template browser's list, not a workflow)."""
SHIPPED_INPUTS = WORKFLOW_FOLDER / "input"
