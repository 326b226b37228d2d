"""ComfyUI entry point of the ThinkDiff node pack: registers the nodes through ComfyUI's V3 API.

ComfyUI imports this folder as a package, so everything inside uses relative imports; the library is
`thinkdiff_core`, the node classes are in `nodes/`. Imported where ComfyUI is absent (pytest imports
the repository root as a package while collecting tests) there is nothing to register.
"""

import logging
from importlib.util import find_spec

WEB_DIRECTORY = "./web"
"""Served by ComfyUI at /extensions/<this folder's name>/; the frontend's node help panel reads
web/docs/<node id>.md from there."""

if find_spec("comfy_api") is not None:
    from .nodes.environment import require_transformers

    require_transformers()  # before anything imports transformers: an old one gets a message naming the fix

    import folder_paths
    from comfy_api.latest import ComfyExtension, io

    from .nodes.clip import ThinkDiffVisionEncode, ThinkDiffVisionLoader
    from .nodes.comfy_models import register_model_folders
    from .nodes.conditioning import ThinkDiffAlignerLoader, ThinkDiffConditioning
    from .nodes.lvlm import ThinkDiffReason, ThinkDiffVLMLoader
    from .nodes.shipped_inputs import SHIPPED_INPUTS, copy_shipped_inputs

    register_model_folders()
    try:  # the example workflows' pictures, so that each runs as loaded; a user's file of the same name is kept
        copied = copy_shipped_inputs(folder_paths.get_input_directory())
    except OSError as error:  # a read-only input folder must not keep the nodes from loading
        logging.warning("ThinkDiff: could not copy the example workflows' pictures into ComfyUI's input folder "
                        "(%s); copy the pictures in %s there yourself to run the example workflows.", error, SHIPPED_INPUTS)
    else:
        if copied:
            logging.info("ThinkDiff: copied %d example picture(s) into %s", len(copied), folder_paths.get_input_directory())

    class ThinkDiffExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return [ThinkDiffVLMLoader, ThinkDiffVisionLoader, ThinkDiffAlignerLoader, ThinkDiffReason,
                    ThinkDiffVisionEncode, ThinkDiffConditioning]

    async def comfy_entrypoint() -> ThinkDiffExtension:
        return ThinkDiffExtension()
