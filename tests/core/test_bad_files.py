"""Files a user can end up with by mistake: each gets a message naming the file, what it is, and the fix.

Every file here is written to disk the way a user would end up with it (an interrupted download, a
saved web page, a git clone without LFS, a hand-edited config), and read by the real loaders.
"""

import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from thinkdiff_core.checkpoint import AlignerInfo, LoadedAligner, load_aligner, save_aligner
from thinkdiff_core.aligner import Aligner
from thinkdiff_core.conditioning import merge_conditioning
from thinkdiff_core.files import write_atomic
from thinkdiff_core.images import open_image
from thinkdiff_core.tokens import LVLM_RECIPE
from thinkdiff_core.vlm import VisionLanguageModel

D_IN, D_OUT = 8, 16


def aligner_tensors(dtype=torch.float32, d_in=D_IN, d_out=D_OUT):
    generator = torch.Generator().manual_seed(0)
    shapes = {"0.weight": (d_out, d_in), "0.bias": (d_out,), "2.weight": (d_out, d_out), "2.bias": (d_out,),
              "3.weight": (d_out,)}
    return {f"mm_projector.{k}": (torch.randn(s, generator=generator) * 3).to(dtype) for k, s in shapes.items()}


def our_metadata(**changes):
    metadata = {"format": "thinkdiff-aligner", "format_version": "1", "variant": "lvlm", "source_model_id": "tiny/vlm",
                "source_hidden_size": str(D_IN), "output_size": str(D_OUT), "token_recipe": LVLM_RECIPE,
                "provenance": "{}"}
    metadata.update(changes)
    return metadata


@pytest.mark.parametrize("content, says", [
    (b"", "empty (0 bytes)"),
    (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>", "web page (HTML)"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 67110000\n", "Git LFS pointer"),
])
def test_official_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, content, says):
    path = tmp_path / "thinkdiff_lvlm.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        load_aligner(path)
    message = str(error.value)
    assert "thinkdiff_lvlm.pth" in message and says in message
    assert "code" not in message  # not mistaken for a pickle carrying code
    assert "Mifucius/ThinkDiff" in message  # where to get the real file


def test_integer_aligner_tensor_is_refused_naming_it(tmp_path):
    tensors = aligner_tensors()
    tensors["mm_projector.2.weight"] = tensors["mm_projector.2.weight"].to(torch.int32)
    path = tmp_path / "aligner.safetensors"
    save_file(tensors, str(path), metadata=our_metadata())
    with pytest.raises(ValueError, match=r"aligner\.safetensors.*mm_projector\.2\.weight.*int32.*float"):
        load_aligner(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_aligner_weights_are_refused(tmp_path, bad):
    tensors = aligner_tensors()
    tensors["mm_projector.0.weight"][3, 2] = bad
    path = tmp_path / "aligner.safetensors"
    save_file(tensors, str(path), metadata=our_metadata())
    with pytest.raises(ValueError, match=r"aligner\.safetensors.*mm_projector\.0\.weight.*(NaN|Inf)"):
        load_aligner(path)


@pytest.mark.parametrize("key, value, says", [
    ("source_hidden_size", "eight", "source_hidden_size"),
    ("output_size", "1.5", "output_size"),
    ("provenance", "{not json", "provenance"),
])
def test_bad_aligner_metadata_names_file_and_entry(tmp_path, key, value, says):
    path = tmp_path / "aligner.safetensors"
    save_file(aligner_tensors(), str(path), metadata=our_metadata(**{key: value}))
    with pytest.raises(ValueError) as error:
        load_aligner(path)
    assert "aligner.safetensors" in str(error.value) and says in str(error.value) and repr(value) in str(error.value)


def copy_vlm_folder(source, destination):
    destination.mkdir()
    for item in source.iterdir():
        (destination / item.name).write_bytes(item.read_bytes())
    return destination


@pytest.mark.parametrize("config_text, says", [
    ('{"model_type": "qwen2_vl",', "not valid JSON"),
    ('["qwen2_vl"]', "not a JSON object"),
])
def test_broken_vlm_config_names_the_file(tmp_path, tiny_vlm_dirs, config_text, says):
    folder = copy_vlm_folder(tiny_vlm_dirs(), tmp_path / "Qwen2-VL-7B-Instruct")
    (folder / "config.json").write_text(config_text)
    with pytest.raises(ValueError) as error:
        VisionLanguageModel.from_pretrained(folder)
    assert "config.json" in str(error.value) and says in str(error.value)


def test_vlm_folder_without_weights_says_what_is_missing(tmp_path, tiny_vlm_dirs):
    folder = copy_vlm_folder(tiny_vlm_dirs(), tmp_path / "Qwen2-VL-7B-Instruct")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ValueError, match=r"Qwen2-VL-7B-Instruct.*no weights.*safetensors"):
        VisionLanguageModel.from_pretrained(folder)


def test_vlm_folder_with_truncated_shard_names_the_shard(tmp_path, tiny_vlm_dirs):
    folder = copy_vlm_folder(tiny_vlm_dirs(), tmp_path / "Qwen2-VL-7B-Instruct")
    shard = sorted(folder.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ValueError) as error:
        VisionLanguageModel.from_pretrained(folder)
    assert shard.name in str(error.value) and "truncated" in str(error.value)


def test_sixteen_bit_image_with_small_values_keeps_its_bit_depth(tmp_path):
    """A dark 16-bit scan (every value <= 255) is nearly black, not read as if it were 8-bit."""
    values = np.full((8, 8), 200, dtype=np.uint16)
    path = tmp_path / "dark16.png"
    Image.fromarray(values).save(path)  # uint16 data: Pillow writes a 16-bit grayscale PNG
    assert Image.open(path).mode.startswith("I")
    pixel = open_image(path).getpixel((0, 0))
    assert pixel == (1, 1, 1)  # 200 / 65535 * 255 rounds to 1, not 200


def test_too_narrow_aligner_blames_the_aligner(tmp_path):
    base = [[torch.zeros(1, 256, 4096), {"pooled_output": torch.zeros(1, 768)}]]
    narrow = torch.zeros(1, 5, 64)
    with pytest.raises(ValueError) as error:
        merge_conditioning(base, narrow, "replace")
    message = str(error.value)
    assert "aligner" in message.lower() and "64" in message and "4096" in message
    assert "use a FLUX text encoder" not in message  # the base is right; the aligner is the wrong one


def test_write_atomic_reports_the_writer_error_not_the_cleanup_error(tmp_path):
    def fails(temporary):
        temporary.mkdir()  # something the clean-up cannot unlink (permissions do not stop root, a folder does)
        raise RuntimeError("disk full while writing")

    with pytest.raises(RuntimeError, match="disk full while writing"):
        write_atomic(tmp_path / "result.png", fails)


@pytest.mark.parametrize("overwrite_existing", [False, True])
def test_written_aligner_gets_the_umask_mode(tmp_path, overwrite_existing):
    path = tmp_path / "aligner.safetensors"
    module = Aligner(D_IN, D_OUT)
    aligner = LoadedAligner(module, AlignerInfo("tiny/vlm", LVLM_RECIPE))
    old = os.umask(0o022)
    try:
        if overwrite_existing:
            path.write_bytes(b"old")
            os.chmod(path, 0o644)
        save_aligner(path, aligner, overwrite=overwrite_existing)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(json.dumps(load_aligner(path).info.provenance)) == {}


def test_only_checkpoints_that_hold_an_aligner_count_as_aligner_files(tmp_path):
    from thinkdiff_core.checkpoint import is_aligner_file

    official = tmp_path / "thinkdiff_lvlm.pth"
    torch.save({"model": aligner_tensors(), "epoch": 3}, official)
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": aligner_tensors()}, legacy, _use_new_zipfile_serialization=False)
    trainer = tmp_path / "trainer.pt"  # what train.align writes beside each checkpoint
    torch.save({"step": 10, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": []}}, trainer)
    other = tmp_path / "pytorch_model.bin"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    assert is_aligner_file(official) and is_aligner_file(legacy)
    assert not is_aligner_file(trainer) and not is_aligner_file(other)


def test_generation_settings_refuse_nan_temperature():
    from thinkdiff_core.vlm import GenerationSettings

    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(temperature=float("nan"))


def test_empty_word_is_refused_naming_its_place():
    from thinkdiff_core.prompts import build_prompt

    picture = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match=r"Word 2 of 3 is empty"):
        build_prompt("cobsat_reasoning", [picture, picture], ["red", " ", "blue"])


def test_max_new_tokens_past_the_context_is_refused_with_the_room_left(tiny_vlm):
    from thinkdiff_core.prompts import compose_prompt
    from thinkdiff_core.vlm import GenerationSettings

    prompt = compose_prompt([Image.new("RGB", (28, 28))], [])
    too_many = tiny_vlm.context_length  # the prompt takes some positions too, so this cannot fit
    with pytest.raises(ValueError, match=r"max_new_tokens=\d+ does not fit.*at most \d+"):
        tiny_vlm.generate([prompt], GenerationSettings(max_new_tokens=too_many, min_new_tokens=0))


def test_picture_with_an_extreme_aspect_ratio_is_named(tiny_vlm):
    from thinkdiff_core.prompts import compose_prompt
    from thinkdiff_core.vlm import UnusableImage

    pictures = [Image.new("RGB", (56, 56)), Image.new("RGB", (28 * 300, 28))]
    with pytest.raises(UnusableImage, match=r"Picture 2: 8400x28 pixels \(aspect ratio 300:1\).*Crop or pad"):
        tiny_vlm.prepare([compose_prompt(pictures, [])])


def read_only_folder(tmp_path):
    """A destination that cannot take files, for root too: a path whose parent is a regular file."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    return blocker / "results"


def test_generate_refuses_an_unwritable_out_before_loading_models(tmp_path, colour_images, capsys):
    from thinkdiff_core import generate

    image = tmp_path / "a.png"
    colour_images("red")[0].save(image)
    out = read_only_folder(tmp_path) / "out.png"
    assert generate.main(["--tiny", "--image", str(image), "--words", "a", "b", "--out", str(out)]) == 2
    error = capsys.readouterr()
    assert "--out" in error.err and "cannot write there" in error.err
    assert "VLM:" not in error.out  # nothing was generated and then lost



def run_limited(argv, file_size_limit):
    """Run a CLI in a child whose files cannot grow past `file_size_limit` bytes: a destination that fills up."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, preexec_fn=limit, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_convert_into_a_full_destination_is_one_error_line(tmp_path):
    source = tmp_path / "thinkdiff_lvlm.pth"
    torch.save({"model": aligner_tensors(d_in=64, d_out=256)}, source)  # ~330 kB of tensors
    target = tmp_path / "out" / "aligner.safetensors"
    result = run_limited(["-m", "thinkdiff_core.convert", "aligner", str(source), str(target)], file_size_limit=64 * 1024)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Could not write" in errors[0] and "aligner.safetensors" in errors[0]
    assert not target.exists() and not [p for p in target.parent.iterdir()]  # no half-written file left behind


def test_convert_into_an_unwritable_destination_is_one_error_line(tmp_path, capsys):
    from thinkdiff_core.convert import main as convert_main

    source = tmp_path / "thinkdiff_lvlm.pth"
    torch.save({"model": aligner_tensors()}, source)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    assert convert_main(["aligner", str(source), str(blocker / "aligner.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_broken_blip2_config_names_the_file(tmp_path):
    from thinkdiff_core.vision_files import read_vision_weights

    folder = tmp_path / "blip2-flan-t5-xxl"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "blip-2",')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        read_vision_weights(folder)
