"""ComfyUI entry point of the ThinkDiff node pack: registers the nodes through ComfyUI's V3 API.

ComfyUI imports this folder as a package, so everything inside uses relative imports; the library is
`thinkdiff_core`, the node classes are in `nodes/`. Imported where ComfyUI is absent (pytest imports
the repository root as a package while collecting tests) there is nothing to register.
"""

from importlib.util import find_spec

if find_spec("comfy_api") is not None:
    from .nodes.environment import require_transformers

    require_transformers()  # before anything imports transformers: an old one gets a message naming the fix

    from comfy_api.latest import ComfyExtension, io

    from .nodes.comfy_models import register_model_folders
    from .nodes.conditioning import ThinkDiffAlignerLoader, ThinkDiffConditioning
    from .nodes.lvlm import ThinkDiffReason, ThinkDiffVLMLoader

    register_model_folders()

    class ThinkDiffExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return [ThinkDiffVLMLoader, ThinkDiffAlignerLoader, ThinkDiffReason, ThinkDiffConditioning]

    async def comfy_entrypoint() -> ThinkDiffExtension:
        return ThinkDiffExtension()
