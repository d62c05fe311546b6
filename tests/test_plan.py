"""The one restore planner: local paths and filesystem URIs refuse the same plans and lay out the
same outputs."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.restore.plan import IMAGE, VIDEO, plan_jobs

pytest.importorskip("pyarrow", reason="URIs go through pyarrow (the cluster extra)")


def _tree(root: Path) -> None:
    for name in ("one/a.png", "two/a.png", "one/deep/b.jpg", "one/notes.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".txt"):
            (root / name).write_text("x")
        else:
            Image.new("RGB", (8, 8)).save(root / name)
    (root / "one" / "clip.mp4").write_bytes(b"")


def _spell(path: Path, as_uri: bool):
    return path.as_uri() if as_uri else path


@pytest.mark.parametrize("as_uri", [False, True], ids=["paths", "uris"])
def test_both_spellings_refuse_the_same_plans(tmp_path, as_uri):
    _tree(tmp_path)
    s = lambda p: _spell(tmp_path / p, as_uri)  # noqa: E731
    with pytest.raises(HinetDeployError, match="would both be written to"):
        plan_jobs([s("one/a.png"), s("two/a.png")], s("out"))
    with pytest.raises(HinetDeployError, match="would be overwritten by its own output"):
        plan_jobs([s("one/a.png")], s("one"))
    with pytest.raises(HinetDeployError, match="is the input folder"):
        plan_jobs([s("one")], s("one"))
    with pytest.raises(HinetDeployError, match="does not exist"):
        plan_jobs([s("missing.png")], s("out"))


@pytest.mark.parametrize("as_uri", [False, True], ids=["paths", "uris"])
def test_both_spellings_lay_out_the_same_outputs(tmp_path, as_uri):
    _tree(tmp_path)
    s = lambda p: _spell(tmp_path / p, as_uri)  # noqa: E731
    plan = plan_jobs([s("one"), s("one/deep/b.jpg"), s("one/deep/b.jpg")], s("out"))
    relative = sorted((str(j.output).split("/out/", 1)[1], j.kind) for j in plan.jobs)
    assert relative == [("a.png", IMAGE), ("b.jpg", IMAGE), ("clip.mp4", VIDEO),
                        ("deep/b.jpg", IMAGE)]  # b.jpg named twice: planned once
    assert [str(p).rsplit("/", 1)[1] for p in plan.ignored] == ["notes.txt"]


@pytest.mark.parametrize("as_uri", [False, True], ids=["paths", "uris"])
def test_an_output_folder_inside_an_input_folder_is_left_out(tmp_path, as_uri):
    _tree(tmp_path)
    plan_jobs([_spell(tmp_path / "one", as_uri)], _spell(tmp_path / "one" / "out", as_uri))
    (tmp_path / "one" / "out").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "out" / "a.png")  # an earlier run's output
    again = plan_jobs([_spell(tmp_path / "one", as_uri)], _spell(tmp_path / "one" / "out", as_uri))
    assert not any("/out/out/" in str(j.output) for j in again.jobs)
    assert len(again.jobs) == 3


def test_a_symlink_loop_fails_alone(tmp_path):
    _tree(tmp_path)
    (tmp_path / "one" / "loop.png").symlink_to(tmp_path / "one" / "loop.png")
    plan = plan_jobs([tmp_path / "one"], tmp_path / "out")
    assert [Path(p).name for p, _ in plan.failed] == ["loop.png"]
    assert len(plan.jobs) == 3


def test_an_output_with_a_file_name_is_that_file_for_one_input(tmp_path, small_onnx):
    from hinet_deploy.cli import main

    _tree(tmp_path)
    photo = tmp_path / "one" / "a.png"
    assert main(["restore", str(photo), "-o", str(tmp_path / "new" / "a_out.png"), "--model",
                 str(small_onnx), "--quiet"]) == 0
    assert (tmp_path / "new" / "a_out.png").is_file()  # a file, not a folder named a_out.png
    plan = plan_jobs([photo], tmp_path / "x.jpg")
    assert [(j.source, j.output) for j in plan.jobs] == [(photo, tmp_path / "x.jpg")]
    (tmp_path / "looks.png").mkdir()  # an existing folder stays a folder, whatever its name
    assert plan_jobs([photo], tmp_path / "looks.png").jobs[0].output == tmp_path / "looks.png" / \
        "a.png"


@pytest.mark.parametrize("inputs, output, message", [
    (["one/a.png", "two/a.png"], "x.png", "names a file, but 2 inputs would go there"),
    (["one"], "x.png", "names a file, but the folder"),
    (["one/clip.mp4"], "x.png", "names an image file but"),
])
def test_ambiguous_file_outputs_are_refused_and_create_nothing(tmp_path, small_onnx, inputs,
                                                               output, message, capsys):
    from hinet_deploy.cli import main

    _tree(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    code = main(["restore", *[str(tmp_path / i) for i in inputs], "-o", str(tmp_path / "new" / output),
                 "--model", str(small_onnx)])
    assert code == 2 and message in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before
