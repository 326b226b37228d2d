"""Two processes (`accelerate launch`, CPU, gloo): disjoint data, identical aligner weights on both ranks."""

import json

import torch
from safetensors.torch import load_file

from train.step import weights_crc32
from thinkdiff_core.checkpoint import KEY_PREFIX, load_aligner


def test_two_processes_train_on_disjoint_data_and_stay_identical(make_train_config, tools, tmp_path):
    # 3 shards of 16 over 2 ranks x 1 worker: whole shards per rank; 2 steps of 8 stay within the first epoch
    config = make_train_config(tmp_path / "ddp", optim={"max_steps": 2}, data={"num_workers": 1, "log_sample_keys": True,
                                                                                "eval": ""})
    config_file = tools.write_config(config, tmp_path / "ddp.yaml")
    result = tools.run("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                       "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(tools.free_port()),
                       "-m", "train.align", "--config", str(config_file))
    assert result.returncode == 0, result.stderr[-4000:]

    ranks = [json.loads((tmp_path / "ddp" / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    keys = [set(r["keys"]) for r in ranks]
    assert [len(r["keys"]) for r in ranks] == [16, 16] and [len(k) for k in keys] == [16, 16]
    assert not keys[0] & keys[1]
    assert ranks[0]["weights_crc32"] == ranks[1]["weights_crc32"]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["ranks_in_sync"] and summary["steps"] == 2
    exported = load_aligner(tmp_path / "ddp" / "aligner.safetensors")
    assert weights_crc32(exported.module) == ranks[0]["weights_crc32"]
    assert exported.info.provenance["batch_size"] == 16 and exported.info.provenance["steps"] == 2
    # plain safetensors, as the nodes read it: the library's key prefix on exactly the aligner's weights
    tensors = load_file(tmp_path / "ddp" / "aligner.safetensors")
    state = exported.module.state_dict()
    assert sorted(tensors) == sorted(KEY_PREFIX + k for k in state)
    assert all(torch.equal(tensors[KEY_PREFIX + k], v) for k, v in state.items())
