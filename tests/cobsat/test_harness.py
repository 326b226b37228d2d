"""`python -m train.cobsat --tiny`: the full loop offline; resume, sharding and settings checks."""

import json

import pytest

from train.cobsat import harness as cobsat

SMALL = ["--tiny", "--shots", "2", "--tasks", "1,4", "--num_prompts", "2", "--generation.batch_size", "2",
         "--generation.max_new_tokens", "6", "--judge.max_new_tokens", "4"]


def run(out, *extra):
    return cobsat.main(SMALL + ["--out", str(out), *extra])


def summary(capsys) -> dict:
    lines = [line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line]
    return {key: value for key, value in lines}


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert run(out) == 0
    return out


def test_full_loop_writes_images_judgements_and_reports(finished_run):
    images = sorted((finished_run / "images").rglob("*.jpg"))
    assert [p.relative_to(finished_run / "images").as_posix() for p in images] == [
        "shot_2/task_1/0_car_blue_brown_orange.jpg", f"shot_2/task_1/{images[1].name}",
        "shot_2/task_4/0_park_cat_cow_lion.jpg", f"shot_2/task_4/{images[3].name}",
    ]
    assert all(p.with_suffix(".json").is_file() for p in images)
    assert len(list((finished_run / "judgements" / "qwen-tiny").rglob("*.json"))) == 4
    report = json.loads((finished_run / "report_qwen-tiny.json").read_text())
    tasks = report["methods"]["thinkdiff"]["shots"]["2"]["tasks"]
    assert set(tasks) == {"Color-I", "Background-II"}
    assert all(t["prompts"] == 2 and t["missing_images"] == 0 for t in tasks.values())
    assert report["methods"]["thinkdiff"]["shots"]["2"]["average"] == pytest.approx(
        sum(t["accuracy"] for t in tasks.values()) / 2)
    table = (finished_run / "report_qwen-tiny.md").read_text()
    assert "| average |" in table and "| 0.417 |" in table
    assert report["judge"] == {"judge": "qwen-tiny", "dtype": "float32", "max_new_tokens": 4, "decoding": "greedy"}
    assert "(judge: qwen-tiny, float32)" in table
    assert len(list((finished_run / "clip_scores").rglob("*.json"))) == 4
    shot = report["methods"]["thinkdiff"]["shots"]["2"]
    assert 0 <= shot["average_clip_accuracy"] <= 1 and shot["average_clip_similarity"] >= 0
    assert all({"clip_similarity", "clip_accuracy"} <= set(t) for t in tasks.values())
    assert "| CLIP similarity (average) |" in table and "| CLIP accuracy (average) |" in table


def test_judging_more_with_another_judge_setting_is_refused(finished_run, tmp_path, capsys):
    out = tmp_path / "other-judge"
    for name, data in snapshot(finished_run).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    next((out / "judgements").rglob("*.json")).unlink()
    assert run(out, "--judge.max_new_tokens", "5") == 2
    error = capsys.readouterr().err
    assert "holds judgements made with other settings (max_new_tokens: 4 -> 5)" in error and "judge_qwen-tiny.json" in error


def test_second_run_generates_nothing_and_reproduces_the_report(finished_run, capsys):
    before = snapshot(finished_run)
    assert run(finished_run) == 0
    printed = summary(capsys)
    assert (printed["generated"], printed["judged"]) == ("0", "0")
    assert snapshot(finished_run) == before


def test_a_lost_image_is_remade_identically_and_missing_images_count_as_wrong(finished_run, tmp_path, capsys):
    out = tmp_path / "copy"
    for name, data in snapshot(finished_run).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    lost = out / "images" / "shot_2" / "task_4" / "0_park_cat_cow_lion.jpg"
    original = lost.read_bytes()
    lost.unlink()
    (out / "judgements" / "qwen-tiny" / "shot_2" / "task_4" / "0_park_cat_cow_lion.json").unlink()

    assert run(out, "--stages", "report") == 0
    report = json.loads((out / "report_qwen-tiny.json").read_text())
    assert report["methods"]["thinkdiff"]["shots"]["2"]["tasks"]["Background-II"]["missing_images"] == 1
    capsys.readouterr()

    assert run(out, "--stages", "generate") == 0
    assert summary(capsys)["generated"] == "1"
    assert lost.read_bytes() == original


def test_shards_split_the_work_and_make_the_same_images(finished_run, tmp_path, capsys):
    out = tmp_path / "sharded"
    for shard in (0, 1):
        assert run(out, "--shard", str(shard), "--num_shards", "2") == 0
        printed = summary(capsys)
        assert printed["shard_prompts"] == "2" and printed["generated"] == "2"
    assert run(out, "--stages", "report") == 0
    assert snapshot(out / "images") == snapshot(finished_run / "images")
    assert (out / "report_qwen-tiny.json").read_bytes() == (finished_run / "report_qwen-tiny.json").read_bytes()


def test_other_settings_in_the_same_folder_are_refused(finished_run, capsys):
    assert run(finished_run, "--generation.steps", "3") == 2
    assert "steps: 2 -> 3" in capsys.readouterr().err


def test_report_refuses_unjudged_images(finished_run, tmp_path, capsys):
    out = tmp_path / "unjudged"
    assert run(out, "--stages", "generate") == 0
    assert run(out, "--stages", "report") == 2
    assert "have no qwen-tiny judgement" in capsys.readouterr().err


def test_methods_compare_on_the_same_answers_and_seeds_side_by_side(tmp_path, capsys):
    out = tmp_path / "methods"
    assert run(out, "--tasks", "1", "--generation.methods", "thinkdiff,vlm-text,thinkdiff+text") == 0
    roots = {"thinkdiff": out, "vlm-text": out / "methods" / "vlm-text", "thinkdiff+text": out / "methods" / "thinkdiff+text"}
    records = {m: json.loads(next((root / "images" / "shot_2" / "task_1").glob("0_*.json")).read_text())
               for m, root in roots.items()}
    assert len({r["vlm_text"] for r in records.values()}) == 1  # one VLM answer for all three
    assert records["thinkdiff+text"]["text_prompt"] == records["thinkdiff+text"]["words"][-1]
    images = {m: next((root / "images" / "shot_2" / "task_1").glob("0_*.jpg")).read_bytes() for m, root in roots.items()}
    assert len(set(images.values())) == 3
    assert json.loads((roots["vlm-text"] / "run.json").read_text())["method"] == "vlm-text"
    report = json.loads((out / "report_qwen-tiny.json").read_text())
    assert set(report["methods"]) == {"thinkdiff", "vlm-text", "thinkdiff+text"}
    table = (out / "report_qwen-tiny.md").read_text()
    assert "| task | thinkdiff 2-shot | vlm-text 2-shot | thinkdiff+text 2-shot | paper 2-shot |" in table
    assert "| paper ablation: input-token features | - | - | - | 0.016 |" in table
    assert "| paper ablation: no masking | - | - | - | 0.287 |" in table
