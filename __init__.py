"""ComfyUI entry point of the ThinkDiff node pack: registers the nodes through ComfyUI's V3 API.

ComfyUI imports this folder as a package, so everything inside uses relative imports; the library is
`thinkdiff_core`, the node classes are in `nodes/`.
"""

from .nodes.environment import require_transformers

require_transformers()

from comfy_api.latest import ComfyExtension, io  # noqa: E402  (after the version check, which names the fix)

from .nodes.comfy_models import register_model_folders  # noqa: E402
from .nodes.conditioning import ThinkDiffAlignerLoader, ThinkDiffConditioning  # noqa: E402
from .nodes.lvlm import ThinkDiffReason, ThinkDiffVLMLoader  # noqa: E402

register_model_folders()


class ThinkDiffExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ThinkDiffVLMLoader, ThinkDiffAlignerLoader, ThinkDiffReason, ThinkDiffConditioning]


async def comfy_entrypoint() -> ThinkDiffExtension:
    return ThinkDiffExtension()
