"""`restore --ray` on a real local Ray cluster (no mocks): the same outputs as the single-process
command, each once; a worker killed mid-run changes nothing; restore_dataset on a Ray Dataset."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.image_files import read_image_file, write_image_file

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'hinet-deploy[cluster]'")


def _photos(folder: Path, count: int, size=(40, 56)) -> list[Path]:
    rng = np.random.default_rng(5)
    paths = []
    for i in range(count):
        path = folder / ("nested" if i % 2 else ".") / f"p{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image_file(path, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _command(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "restore", *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): read_image_file(p).pixels
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ray_restores_a_folder_like_the_single_process_command(tmp_path, small_onnx):
    _photos(tmp_path / "in", 6)
    single = _command(tmp_path / "in", "-o", tmp_path / "single", "--model", small_onnx, "--quiet")
    assert single.returncode == 0, single.stderr
    on_ray = _command(tmp_path / "in", "-o", tmp_path / "ray", "--model", small_onnx, "--quiet",
                      "--ray", "--workers", "2")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert on_ray.stdout.startswith("restored 6")
    want, got = _outputs(tmp_path / "single"), _outputs(tmp_path / "ray")
    assert sorted(got) == sorted(want) and len(got) == 6  # each once, nothing extra
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    again = _command(tmp_path / "in", "-o", tmp_path / "ray", "--model", small_onnx, "--quiet",
                     "--ray")
    assert again.returncode == 0 and "skipped 6 whose output exists" in again.stdout


def _worker_pids() -> set[int]:
    """Processes of Ray Data's map actors (Ray names them ray::MapWorker(...))."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines() if "MapWorker" in line}


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, small_onnx):
    sources = _photos(tmp_path / "in", 16, size=(96, 128))
    out = tmp_path / "out"
    killed = []

    def kill_one_worker():
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            done = len(list(out.rglob("*.png"))) if out.exists() else 0
            pids = _worker_pids()
            if done >= 2 and pids:
                pid = sorted(pids)[0]
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, done))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    result = _command(tmp_path / "in", "-o", out, "--model", small_onnx, "--quiet", "--ray",
                      "--workers", "2")
    killer.join()
    assert killed, "no worker was found to kill"
    assert killed[0][1] < len(sources), "the run had finished before the kill"
    assert result.returncode == 0, result.stderr[-3000:]
    got = _outputs(out)
    assert len(got) == len(sources)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left
    with Restorer(small_onnx) as restorer:
        for source in sources:
            name = source.relative_to(tmp_path / "in").as_posix()
            np.testing.assert_array_equal(got[name], restorer(read_image_file(source).pixels))


def test_restore_dataset_on_a_ray_dataset(small_onnx):
    from hinet_deploy.restore.cluster import restore_dataset

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(4)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.from_items([{"image": im, "index": i} for i, im in enumerate(images)])
        rows = sorted(restore_dataset(ds, small_onnx, workers=1).take_all(),
                      key=lambda r: r["index"])
    finally:
        ray.shutdown()
    with Restorer(small_onnx) as restorer:
        for row, image in zip(rows, images):
            np.testing.assert_array_equal(row["image"], restorer(image))


def test_one_video_on_two_workers_is_split_and_joined_exactly(tmp_path, small_onnx):
    """Fewer videos than workers: keyframe-aligned segments on different workers, joined in order:
    the same frames, order and timestamps as the single-process output (lossless: same pixels)."""
    av = pytest.importorskip("av")
    from test_restore import make_video

    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "clip.mp4", 36, keyint=12)
    lossless = ["--crf", "0", "--pix-fmt", "yuv444p", "--quiet"]
    single = _command(tmp_path / "in", "-o", tmp_path / "single", "--model", small_onnx, *lossless)
    assert single.returncode == 0, single.stderr
    on_ray = _command(tmp_path / "in", "-o", tmp_path / "ray", "--model", small_onnx, *lossless,
                      "--ray", "--workers", "2")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert [p.name for p in (tmp_path / "ray").iterdir()] == ["clip.mp4"]  # segments removed

    def decoded(path):
        with av.open(str(path)) as container:
            frames = list(container.decode(video=0))
            streams = [s.type for s in container.streams]
            return streams, [f.pts * f.time_base for f in frames], [f.to_ndarray(format="rgb24")
                                                                    for f in frames]

    want, got = decoded(tmp_path / "single" / "clip.mp4"), decoded(tmp_path / "ray" / "clip.mp4")
    assert got[0] == want[0] == ["video", "audio"]
    assert got[1] == want[1] and len(got[2]) == 36
    for a, b in zip(got[2], want[2]):
        np.testing.assert_array_equal(a, b)


def test_rows_split_videos_only_when_workers_would_idle(tmp_path):
    from hinet_deploy.restore.cluster import work_rows
    from hinet_deploy.restore.plan import VIDEO, Job
    from test_restore import make_video

    for name in ("a.mp4", "b.mp4"):
        make_video(tmp_path / name, 24, keyint=12, audio=False)
    jobs = [Job(tmp_path / n, tmp_path / "out" / n, VIDEO) for n in ("a.mp4", "b.mp4")]
    assert len(work_rows(jobs, workers=2, split_videos=None)) == 2  # two videos, two workers: whole
    assert len(work_rows(jobs[:1], workers=2, split_videos=None)) == 2  # one video: two segments
    assert len(work_rows(jobs[:1], workers=2, split_videos=False)) == 1


def test_uris_in_and_out(tmp_path, small_onnx):
    """file:// URIs through pyarrow's filesystem layer (the one Ray Data reads s3:// and gs://
    with): the same outputs as local paths; a URI without --ray is one line."""
    _photos(tmp_path / "in", 3)
    local = _command(tmp_path / "in", "-o", tmp_path / "local", "--model", small_onnx, "--quiet")
    assert local.returncode == 0, local.stderr
    source, target = (tmp_path / "in").as_uri(), (tmp_path / "remote").as_uri()
    refused = _command(source, "-o", target, "--model", small_onnx)
    assert refused.returncode == 2 and "add --ray" in refused.stderr.strip().splitlines()[-1]
    on_ray = _command(source, "-o", target, "--model", small_onnx, "--quiet", "--ray")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    want, got = _outputs(tmp_path / "local"), _outputs(tmp_path / "remote")
    assert sorted(got) == sorted(want) and len(got) == 3
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    again = _command(source, "-o", target, "--model", small_onnx, "--quiet", "--ray")
    assert again.returncode == 0 and "skipped 3 whose output exists" in again.stdout


def test_quiet_means_the_summary_alone(tmp_path, small_onnx):
    """--quiet on Ray: no Ray lines (Python's or its C++ core's), the summary on stdout alone."""
    _photos(tmp_path / "in", 2)
    done = _command(tmp_path / "in", "-o", tmp_path / "out", "--model", small_onnx, "--ray",
                    "--workers", "2", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
    assert len(done.stdout.strip().splitlines()) == 1 and done.stdout.startswith("restored 2 in ")


def test_a_model_the_workers_cannot_open_is_the_local_one_line(tmp_path, small_ckpt):
    """An engine on workers without a GPU (--ray-address local: no local check first): the line
    and exit 2 of the single-process command, not Ray's traceback."""
    from conftest import small_rtx_engine

    engine = small_rtx_engine(small_ckpt, tmp_path / "engines")
    _photos(tmp_path / "in", 1)
    local = _command(tmp_path / "in", "-o", tmp_path / "local", "--model", engine, "--quiet")
    on_ray = _command(tmp_path / "in", "-o", tmp_path / "out", "--model", engine, "--quiet",
                      "--ray", "--ray-address", "local")
    assert local.returncode == on_ray.returncode == 2, on_ray.stderr[-3000:]
    assert "Traceback" not in on_ray.stderr
    assert on_ray.stderr.strip().splitlines()[-1] == local.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("quiet", [True, False])
def test_a_local_ray_that_cannot_start_says_why_in_one_line(tmp_path, small_onnx, quiet):
    _photos(tmp_path / "in", 1)
    (tmp_path / "file").write_text("not a folder")
    run = _command(tmp_path / "in", "-o", tmp_path / "out", "--model", small_onnx, "--ray",
                   *(["--quiet"] if quiet else []),
                   env={"RAY_TMPDIR": str(tmp_path / "file" / "ray")})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: cannot start a local Ray: ")


def test_the_workers_notes_reach_the_summary(tmp_path, small_onnx):
    """What the local runner says of a file (an odd size encoded 4:4:4) is said on Ray too."""
    pytest.importorskip("av")
    from test_video import make_video

    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "odd.mp4", size=(97, 63), pix_fmt="yuv444p")
    asked = ["--pix-fmt", "yuv420p", "--quiet"]  # which 97x63 cannot hold: said in a line
    local = _command(tmp_path / "in", "-o", tmp_path / "local", "--model", small_onnx, *asked)
    on_ray = _command(tmp_path / "in", "-o", tmp_path / "ray", "--model", small_onnx, *asked,
                      "--ray")
    assert local.returncode == on_ray.returncode == 0, on_ray.stderr[-3000:]
    note = "97x63 is odd, which yuv420p cannot hold: encoded yuv444p"
    assert note in local.stderr and note in on_ray.stderr
