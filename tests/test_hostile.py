"""A day of hostile input, by class (README: Files from elsewhere): files we did not write are never
deleted, special files never opened, signals end a run as Ctrl-C does, any legal name works,
broken weights and non-finite outputs write nothing, and the Python API says what to pass.
Each class runs the real thing (real FIFOs, sockets and devices, real signals to a child process,
real file names) with several cases."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, SIDD_LIKE, random_net
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import atomic_path, is_partial, partial_name, remove_stale_partials
from hinet_deploy.common.limits import SizeLimits
from hinet_deploy.export.checkpoint import load_checkpoint, save_basicsr
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.backends import BackendBase

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _cli(*args, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hinet_deploy.cli", *map(str, args)],
                          capture_output=True, timeout=timeout, env=env or ENV)


def _photo(path: Path, size=(40, 56), seed=0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# 1. A file we did not write is never deleted.

LOOK_ALIKES = ["{name}.{pid}.notes", "{name}.{pid}.abc123.tmp", "{name}.{pid}.partial.png",
               "{name}.hinet-partial-{pid}-abcdefgh123456.tmp",  # our shape, a wrong check
               "{name}.hinet-partial-{pid}-ABCDEFGH123456.png", "{name}.{pid}",
               "{name}.hinet-partial-{pid}-abcdefgh12345.tmp"]


def test_look_alike_user_files_in_the_output_folder_are_untouched(tmp_path, small_onnx):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _photo(inputs / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    pid = _dead_pid()
    users = [out / ("." + shape.format(name="a.png", pid=pid)) for shape in LOOK_ALIKES]
    users += [out / f".b.png.{pid}.mine", out / f"a.png.{pid}.tmp"]
    for path in users:
        path.write_text("a user's own file")
    ours = out / partial_name(out / "a.png", ".png").replace(str(os.getpid()), str(pid))
    assert is_partial(ours.name) is None  # another pid: its check no longer matches
    killed = _killed_writers_partial(out / "a.png")
    run = _cli("restore", inputs, "-o", out, "--model", small_onnx, "--quiet")
    assert run.returncode == 0, run.stderr
    assert all(p.read_text() == "a user's own file" for p in users)
    assert not killed.exists()  # what a killed writer of ours left is swept
    assert (out / "a.png").is_file()


def _killed_writers_partial(path: Path) -> Path:
    """The temporary file of a writer killed with -9 mid-write, made by a real child process."""
    code = ("import os, sys\nfrom pathlib import Path\nfrom hinet_deploy.common.files import "
            "atomic_path\nwith atomic_path(Path(sys.argv[1]), '.png') as tmp:\n"
            "    tmp.write_bytes(b'half')\n    print(tmp, flush=True)\n    os.kill(os.getpid(), 9)\n")
    child = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                           text=True, env=ENV)
    assert child.returncode == -9
    left = Path(child.stdout.strip())
    assert left.is_file() and is_partial(left.name) is not None
    return left


def test_partial_names_are_ours_alone_and_fit_any_legal_name(tmp_path):
    for name in ["a.png", "x" * 251 + ".png", "é" * 125 + ".mp4",
                 os.fsdecode(b"caf\xe9-" + b"y" * 240 + b".jpg")]:
        target = tmp_path / name
        made = partial_name(target, ".partial.mp4")
        assert len(os.fsencode(made)) <= 255 and is_partial(made) == os.getpid()
        with atomic_path(target, ".tmp") as tmp:
            tmp.write_bytes(b"x")
        assert target.read_bytes() == b"x"
    assert is_partial(".clip.mp4.20231.notes") is None
    assert is_partial(made[:-1] + ("0" if made[-1] != "0" else "1")) is None


def test_the_sweep_leaves_live_writers_folders_and_links(tmp_path):
    live = tmp_path / partial_name(tmp_path / "a.png")  # this process: alive
    live.write_text("being written")
    pid = _dead_pid()
    # a real dead writer's name: made by the same function in a process now gone
    code = ("import sys\nfrom pathlib import Path\nfrom hinet_deploy.common.files import "
            "partial_name\nprint(partial_name(Path(sys.argv[1])))")
    made = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b.png")],
                          capture_output=True, text=True, env=ENV).stdout.strip()
    dead = tmp_path / made
    dead.write_text("left by a killed writer")
    folder = tmp_path / partial_name(tmp_path / "c.png").replace(f"-{os.getpid()}-", f"-{pid}-")
    folder.mkdir()
    removed = remove_stale_partials(tmp_path)
    assert removed == [dead] and live.exists() and folder.is_dir()


# 4. Nothing blocks forever: FIFOs, sockets and devices are never opened.

def test_special_files_given_or_found_are_named_and_the_rest_restored(tmp_path, small_onnx):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "good.png")
    os.mkfifo(folder / "pipe.jpg")
    os.mkfifo(folder / "notes.txt")  # neither kind: ignored like any such file
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "camera.png"))
    os.mkfifo(tmp_path / "given.png")
    os.symlink(tmp_path / "given.png", folder / "link-to-pipe.png")
    try:
        run = _cli("restore", folder, tmp_path / "given.png", "/dev/zero", "-o", tmp_path / "out",
                   "--model", small_onnx, "--quiet", timeout=60)
    finally:
        server.close()
    out = run.stdout.decode()
    assert run.returncode == 1 and (tmp_path / "out" / "good.png").is_file(), run.stderr
    for name, what in [("pipe.jpg", "a FIFO"), ("camera.png", "a socket"),
                       ("given.png", "a FIFO"), ("link-to-pipe.png", "a FIFO"),
                       ("/dev/zero", "a character device")]:
        assert f"{name} (is {what}" in out, out
    assert "ignored 1 files" in out and "notes.txt" in out


def test_a_fifo_as_the_model_is_one_line(tmp_path):
    os.mkfifo(tmp_path / "model.onnx")
    _photo(tmp_path / "a.png")
    run = _cli("restore", tmp_path / "a.png", "-o", tmp_path / "out", "--model",
               tmp_path / "model.onnx", timeout=60)
    assert run.returncode == 2
    assert run.stderr.decode().strip() == (f"error: model {tmp_path / 'model.onnx'} is a FIFO "
                                           f"(named pipe), not a regular file: left alone")


# 6. Signals from the machine behave as Ctrl-C.

def _signal_when(proc, ready, signum: int, settle: float = 0.0) -> None:
    """Sends `signum` to the restore once ready() holds, and checks it ended as Ctrl-C does: one
    line, no traceback, exit 128 + the signal."""
    deadline = time.monotonic() + 90
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle)
    assert proc.poll() is None, "the restore ended before the signal"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1] == f"stopped by {signal.Signals(signum).name}"
    assert "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_folder_keeps_what_finished_and_leaves_nothing_half_written(
        tmp_path, demo_onnx, signum):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(16):
        _photo(folder / f"{i:02d}.png", size=(256, 320), seed=i)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "hinet_deploy.cli", "restore", str(folder),
                             "-o", str(out), "--model", str(demo_onnx), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _signal_when(proc, lambda: len(list(out.glob("*.png"))) >= 2, signum)
    written = sorted(out.iterdir())
    assert written and all(p.name.endswith(".png") and not p.name.startswith(".") for p in written)
    for path in written:  # each one whole
        with Image.open(path) as image:
            image.load()
    rerun = _cli("restore", folder, "-o", out, "--model", demo_onnx, "--quiet", timeout=300)
    assert rerun.returncode == 0 and f"skipped {len(written)} whose" in rerun.stdout.decode()


# 7. Names: the longest legal name, and names that are not UTF-8.

def test_the_longest_legal_name_and_a_non_utf8_name_restore(tmp_path, small_onnx):
    folder = tmp_path / "in"
    folder.mkdir()
    long_name = "x" * 251 + ".png"
    _photo(folder / long_name)
    raw = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes on a UTF-8 system
    _photo(folder / raw)
    env = {**ENV, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    run = _cli("restore", folder, "-o", tmp_path / "out", "--model", small_onnx, "--quiet", env=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / long_name).is_file() and (tmp_path / "out" / raw).is_file()
    assert b"restored 2" in run.stdout
    bad = _cli("restore", folder / raw, "-o", tmp_path / "out2", "--model",
               tmp_path / "none.onnx", env=env)
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr
    failing = folder / os.fsdecode(b"\xfe-broken.png")
    failing.write_bytes(b"not a png")
    run = _cli("restore", folder, "-o", tmp_path / "out3", "--model", small_onnx, "--quiet",
               env=env)
    assert run.returncode == 1 and b"\\xfe-broken.png" in run.stdout, run.stdout


# 3. A network that outputs nonsense writes nothing.

@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_when_the_checkpoint_loads(tmp_path, value):
    state = random_net(SIDD_LIKE).state_dict()
    key = "down_path_1.1.conv_2.weight"
    state[key] = state[key].clone()
    state[key][0, 0, 0, 0] = value
    path = tmp_path / "broken.pth"
    save_basicsr(state, path)
    with pytest.raises(HinetDeployError, match=f"NaN or infinite: {key} \\(1 of "):
        load_checkpoint(path)
    _photo(tmp_path / "a.png")
    for command in (["restore", tmp_path / "a.png", "-o", tmp_path / "out", "--model", path],
                    ["export", "--ckpt", path, "-o", tmp_path / "x.onnx"]):
        run = _cli(*command)
        assert run.returncode == 2 and b"NaN or infinite" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.onnx").exists()


class _Broken(BackendBase):
    """A backend whose network returns NaN or inf in one pixel."""

    name = "broken"
    suffixes = (".broken",)

    def __init__(self, path, value=float("nan")):
        self.path, self.value, self.limits = path, value, SizeLimits(multiple=16)

    def run_impl(self, batch):
        out = batch.copy()
        out[0, 0, 0, 0] = self.value
        return out


class _Foreign:
    """The caller's own object with run() and limits, outside the backend table."""

    limits = SizeLimits(multiple=16)

    def run(self, batch):
        return np.full_like(batch, np.inf)

    def close(self):
        pass


@pytest.mark.parametrize("backend", [_Broken(Path("m.broken")), _Broken(Path("m.broken"), np.inf),
                                     _Foreign()])
def test_non_finite_output_of_any_backend_is_an_error_not_an_image(backend):
    image = np.full((40, 40, 3), 128, np.uint8)
    for mode in ("whole", "blend"):
        with pytest.raises(HinetDeployError, match="NaN or infinite"):
            Restorer(backend, mode=mode)(image)


def test_non_finite_output_fails_that_input_in_a_restore(tmp_path, monkeypatch, capsys):
    """Through the real restore path: the input fails with the line, no output is written."""
    from hinet_deploy.restore.local import run_restore
    from hinet_deploy.restore.plan import plan_jobs
    from hinet_deploy.restore.report import RestoreOptions

    _photo(tmp_path / "a.png")
    plan = plan_jobs([str(tmp_path / "a.png")], str(tmp_path / "out"))
    with Restorer(_Broken(Path("m.broken"))) as restorer:
        report = run_restore(plan, restorer, RestoreOptions(quiet=True), log=print)
    assert len(report.failed) == 1 and "NaN or infinite" in report.failed[0][1]
    assert not (tmp_path / "out" / "a.png").exists()


# 11. The Python API says what to pass.

@pytest.mark.parametrize("call, said", [
    (lambda r: r([np.zeros((32, 32, 3), np.uint8), np.zeros((48, 32, 3), np.uint8)]),
     "restores one image"),
    (lambda r: r([np.zeros((32, 32, 3), np.uint8)] * 2), "restores one image"),
    (lambda r: r("photo.png"), "not the path"),
    (lambda r: r(Path("photo.png")), "not the path"),
    (lambda r: list(r.stream([], depth=0)), "depth must be at least 1"),
    (lambda r: list(r.stream([], depth=-1)), "depth must be at least 1"),
    (lambda r: list(r.stream([], depth=2.5)), "depth must be a whole number, not float"),
    (lambda r: list(r.stream(5)), "takes an iterable of images"),
    (lambda r: r.backend.run(np.zeros((1, 3, 30, 32), np.float32)), "multiples of 16"),
    (lambda r: r.backend.run(np.zeros((1, 4, 32, 32), np.float32)), "N x 3 x H x W"),
    (lambda r: r.backend.run(np.zeros((1, 3, 32, 32), np.uint8)), "numpy float32 array"),
])
def test_misuse_of_the_python_api_says_what_to_pass(small_onnx, call, said):
    with Restorer(small_onnx) as restorer:
        with pytest.raises(HinetDeployError, match=said):
            call(restorer)


def test_a_closed_backend_says_so(small_onnx):
    restorer = Restorer(small_onnx)
    backend = restorer.backend
    restorer.close()
    with pytest.raises(HinetDeployError, match="was closed"):
        backend.run(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(HinetDeployError, match="was closed"):
        restorer(np.zeros((32, 32, 3), np.uint8))



# 2. No silent loss in damaged videos, whatever the container declares.

@pytest.mark.parametrize("suffix, vcodec", [("webm", "libvpx-vp9"), ("mkv", "libx264"),
                                            ("ts", "libx264"), ("avi", "libx264"),
                                            ("mp4", "libx264"), ("mov", "libx264")])
def test_a_damaged_video_is_never_a_silent_success(tmp_path, small_onnx, suffix, vcodec):
    """Bytes overwritten in the middle of clips the FFmpeg CLI made: Matroska/WebM and MPEG-TS
    declare no frame count, yet lost frames make the input a failure with the counts."""
    from footage import clip, damage

    source = damage(clip(tmp_path / f"clip.{suffix}", vcodec, None, seconds=2, size="160x120"))
    run = _cli("restore", source, "-o", tmp_path / "out", "--model", small_onnx, "--quiet",
               timeout=300)
    said = run.stdout.decode() + run.stderr.decode()
    if run.returncode == 1:
        assert "frames" in said and "damaged" in said and "clip." in said, said
        assert not (tmp_path / "out" / source.name).exists()
    else:  # every frame came through: FFmpeg concealed the damage, and a line says where
        assert run.returncode == 0 and "decoded with FFmpeg's error concealment" in said, said


@pytest.mark.parametrize("suffix, vcodec", [("webm", "libvpx-vp9"), ("mkv", "libx264"),
                                            ("ts", "libx264")])
def test_a_clip_cut_short_is_a_failure_with_the_counts(tmp_path, small_onnx, suffix, vcodec):
    from footage import clip

    whole = clip(tmp_path / f"whole.{suffix}", vcodec, None, seconds=2, size="160x120")
    source = tmp_path / f"cut.{suffix}"
    data = whole.read_bytes()
    source.write_bytes(data[:len(data) // 2])
    run = _cli("restore", source, "-o", tmp_path / "out", "--model", small_onnx, "--quiet",
               timeout=300)
    out, err = run.stdout.decode(), run.stderr.decode()
    if suffix == "ts":  # MPEG-TS carries its length only in its timestamps: the frame cut in two
        assert run.returncode == 0 and "decoded with FFmpeg's error concealment" in err, out + err
    else:
        assert run.returncode == 1 and "frames decoded where its duration" in out, out


def test_audio_longer_than_the_video_is_no_loss(tmp_path, small_onnx):
    """The duration check reads the video stream's own duration, not the container's."""
    from footage import ffmpeg

    source = tmp_path / "long-audio.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24:duration=1", "-f", "lavfi", "-i",
           "sine=duration=3", "-c:v", "libx264", "-c:a", "libopus", source)
    run = _cli("restore", source, "-o", tmp_path / "out", "--model", small_onnx, "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr


THREADED = """
import sys
from pathlib import Path
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.video import restore_video
good, bad, out = (Path(a) for a in sys.argv[1:4])
failed = 0
with Restorer(sys.argv[4], mode="whole") as restorer:
    for i in range(int(sys.argv[5])):
        restore_video(good, out / f"good{i}.mkv", restorer)
        try:
            restore_video(bad, out / f"bad{i}.mkv", restorer)
        except HinetDeployError:
            failed += 1
print(failed)
"""


def test_threaded_codecs_restore_and_fail_many_times_without_hanging(tmp_path, small_onnx):
    """FFmpeg's frame-threaded decoders and encoders, opened and freed 16 times, half of them on
    a failing input: no log callback on the codec threads, so no GIL deadlock (it hung before)."""
    from footage import clip, damage

    good = clip(tmp_path / "good.mkv", "libx264", "aac", seconds=1, size="320x240")
    bad = damage(clip(tmp_path / "bad.mkv", "libx264", "aac", seconds=1, size="320x240"),
                 count=20000)
    (tmp_path / "out").mkdir()
    run = subprocess.run([sys.executable, "-c", THREADED, str(good), str(bad), str(tmp_path / "out"),
                          str(small_onnx), "8"], capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "8"


def test_a_refused_video_is_refused_from_its_header_without_decoding(tmp_path, small_onnx):
    """An 8K clip over the limit: refused before FFmpeg's probing decodes a frame (the peak of the
    refusal stays near the interpreter's own)."""
    from footage import ffmpeg

    big = tmp_path / "big.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=7680x4320:rate=24:duration=0.25", "-c:v",
           "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", big)
    # VmHWM, this process's own peak: ru_maxrss would carry the forking parent's (pytest's)
    code = ("import sys\nfrom hinet_deploy.cli import main\nrc = main(sys.argv[1:])\n"
            "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print(int(peak.split()[1]) // 1024)\nsys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, "restore", str(big), "-o",
                          str(tmp_path / "out"), "--model", str(small_onnx), "--quiet",
                          "--max-megapixels", "8"], capture_output=True, text=True, env=ENV)
    assert run.returncode == 1 and "over the limit of 8.0 MP" in run.stdout, run.stdout
    peak_mb = int(run.stdout.strip().splitlines()[-1])
    # measured here: 120 MB; with the probing decode of the first frames, 187 MB
    assert peak_mb < 155, peak_mb


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_video_encoding_leaves_no_partial(tmp_path, small_onnx, signum):
    from test_restore import make_video

    make_video(tmp_path / "long.mp4", 200, (640, 480), audio=False)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "hinet_deploy.cli", "restore",
                             str(tmp_path / "long.mp4"), "-o", str(out), "--model",
                             str(small_onnx)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    _signal_when(proc, lambda: any(out.glob(".long.mp4.*")), signum, settle=0.3)
    assert list(out.iterdir()) == []
