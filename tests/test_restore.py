"""`hinet-deploy restore`: folders, bit depths, videos with audio, skips, bad inputs, Ctrl-C.
Real files, real FFmpeg (PyAV), real ONNX Runtime; the small random model keeps it fast."""
from __future__ import annotations

import fractions
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from hinet_deploy.cli import main
from hinet_deploy.common.memory import PeakMemory
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.image_files import read_image_file, write_image_file
from hinet_deploy.runtime.metrics import psnr
from hinet_deploy.runtime.video import VideoOptions, restore_video

av = pytest.importorskip("av", reason="restoring videos needs PyAV: pip install 'hinet-deploy[video]'")
MODE = "blend"  # the command's default


def make_video(path: Path, frames: int = 12, size=(96, 64), fps: int = 24, audio: bool = True,
               keyint: int | None = None):
    """An H.264 mp4 (and an AAC track) of a noisy gradient, made with PyAV; `keyint`: a keyframe
    every that many frames."""
    width, height = size
    out = av.open(str(path), "w")
    gop = {"g": str(keyint), "keyint_min": str(keyint), "sc_threshold": "0"} if keyint else {}
    video = out.add_stream("libx264", rate=fps, options=gop)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    for i in range(frames):
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
        out.mux(video.encode(frame))
    out.mux(video.encode(None))
    out.close()
    if audio:
        _add_audio(path, frames / fps)


def _add_audio(path: Path, seconds: float):
    """Remuxes `path` with a 440 Hz AAC track (a second pass keeps make_video simple)."""
    source = av.open(str(path))
    tmp = path.with_name("with-audio" + path.suffix)
    out = av.open(str(tmp), "w")
    video = out.add_stream_from_template(source.streams.video[0])
    sound = out.add_stream("aac", rate=48000)
    for packet in source.demux(source.streams.video[0]):
        if packet.dts is not None:
            packet.stream = video
            out.mux(packet)
    samples = int(48000 * seconds)
    wave = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)[None]
    for start in range(0, samples, 1024):
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 1024]),
                                           format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, start
        out.mux(sound.encode(chunk))
    out.mux(sound.encode(None))
    out.close()
    source.close()
    tmp.replace(path)


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _streams(path: Path) -> list[tuple]:
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name) for s in container.streams]


def _restore(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main(["restore", *map(str, args)])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def photo_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    (root / "trip" / "day2").mkdir(parents=True)
    write_image_file(root / "a.png", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    write_image_file(root / "trip" / "deep.png",
                     rng.integers(0, 65536, (33, 47, 3), dtype=np.int64).astype(np.uint16))
    write_image_file(root / "trip" / "day2" / "c.jpg", rng.integers(0, 256, (48, 32, 3), np.uint8))
    write_image_file(root / "trip" / "gray.png", rng.integers(0, 256, (20, 30), dtype=np.uint8))
    (root / "trip" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_is_mirrored_with_sizes_and_bit_depths(photo_folder, small_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _restore(capsys, photo_folder, "-o", out, "--model", small_onnx, "--quiet")
    assert code == 1 and "Traceback" not in err
    assert "broken.png" in err and "broken.png" in stdout.splitlines()[-1]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "trip/day2/c.jpg", "trip/deep.png", "trip/gray.png"]
    with Restorer(small_onnx, mode=MODE) as restorer:
        for name in ("a.png", "trip/deep.png", "trip/gray.png"):
            source, result = read_image_file(photo_folder / name), read_image_file(out / name)
            assert result.pixels.dtype == source.pixels.dtype
            np.testing.assert_array_equal(result.pixels, restorer(source.pixels))
    assert read_image_file(out / "trip/day2/c.jpg").pixels.shape == (48, 32, 3)

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, stdout, _ = _restore(capsys, photo_folder, "-o", out, "--model", small_onnx, "--quiet")
    assert code == 1 and "restored 0, skipped 4 whose output exists" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_all_good_is_exit_0_and_overwrite_redoes(tmp_path, small_onnx, capsys):
    write_image_file(tmp_path / "x.png", np.zeros((16, 16, 3), np.uint8))
    args = (tmp_path / "x.png", "-o", tmp_path / "out", "--model", small_onnx, "--quiet")
    assert _restore(capsys, *args)[0] == 0
    code, stdout, _ = _restore(capsys, *args, "--overwrite")
    assert code == 0 and stdout.startswith("restored 1")


def test_video_keeps_frames_rate_size_and_audio(tmp_path, small_onnx, capsys):
    make_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    code, stdout, err = _restore(capsys, tmp_path / "clip.mp4", "-o", out, "--model", small_onnx,
                                 "--crf", "0", "--pix-fmt", "yuv444p", "--quiet")
    assert code == 0, err
    assert "12 video frames" in stdout
    assert _streams(out / "clip.mp4") == _streams(tmp_path / "clip.mp4") == [
        ("video", "h264"), ("audio", "aac")]
    with av.open(str(tmp_path / "clip.mp4")) as a, av.open(str(out / "clip.mp4")) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert (vb.average_rate, vb.width, vb.height) == (va.average_rate, va.width, va.height)
        assert [p.pts for p in a.demux(a.streams.audio[0]) if p.dts is not None] == \
               [p.pts for p in b.demux(b.streams.audio[0]) if p.dts is not None]
    source, result = _frames(tmp_path / "clip.mp4"), _frames(out / "clip.mp4")
    assert len(result) == len(source) == 12
    with Restorer(small_onnx, mode=MODE) as restorer:
        worst = min(psnr(got, restorer(frame)) for got, frame in zip(result, source))
    assert worst >= 35.0, worst  # CRF 0 in 4:4:4: what is left is RGB <-> YUV rounding


def test_video_memory_does_not_grow_with_length(tmp_path, small_onnx):
    """Peak memory of a 20-frame and a 120-frame restore of 320x240: keeping the frames would add
    about 23 MB (100 x 230 kB); streaming adds nothing measurable."""
    peaks = {}
    with Restorer(small_onnx, mode=MODE) as restorer:
        for frames in (20, 120, 20):  # the short one twice: allocators settle after the first
            make_video(tmp_path / f"{frames}.mp4", frames, (320, 240), audio=False)
            with PeakMemory() as memory:
                restore_video(tmp_path / f"{frames}.mp4", tmp_path / f"out{frames}.mp4", restorer)
            peaks[frames] = memory.peak_mb
    assert peaks[120] - peaks[20] < 12, peaks


def test_ctrl_c_in_a_video_leaves_no_file(tmp_path, small_onnx):
    make_video(tmp_path / "long.mp4", 200, (640, 480), audio=False)  # about 10 s to restore
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "hinet_deploy.cli", "restore",
                             str(tmp_path / "long.mp4"), "-o", str(out), "--model", str(small_onnx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            # A parent that ignores SIGINT (as after some in-process Ray runs)
                            # passes that on, and Python then installs no KeyboardInterrupt.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not any(out.glob(".long.mp4.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # some frames in
    assert proc.poll() is None, "the restore ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
    assert list(out.iterdir()) == []


def test_one_bad_video_does_not_stop_the_others(tmp_path, small_onnx, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "good.mp4", 3, audio=False)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "corrupt.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(300))
    code, stdout, err = _restore(capsys, folder, "-o", tmp_path / "out", "--model", small_onnx,
                                 "--quiet")
    assert code == 1 and "Traceback" not in err
    assert "empty.mp4" in stdout and "corrupt.mkv" in stdout
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.mp4"]


def test_stream_keeps_order_and_matches_single_calls(small_onnx):
    frames = [np.random.default_rng(i).integers(0, 256, (32, 48, 3), np.uint8) for i in range(7)]
    with Restorer(small_onnx) as restorer:
        streamed = list(restorer.stream(iter(frames)))
        for got, frame in zip(streamed, frames):
            np.testing.assert_array_equal(got, restorer(frame))
    assert len(streamed) == 7


def test_memory_guard_tiles_instead_of_failing(small_onnx):
    said = []
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), np.uint8)
    with Restorer(small_onnx, mode="whole", memory_budget_mb=1, on_tiling=said.append) as guarded, \
            Restorer(small_onnx, mode="blend") as blend:
        np.testing.assert_array_equal(guarded(image), blend(image))
    assert len(said) == 1 and "400x300 would need about" in said[0] and "blend tiles" in said[0]


def test_video_options_map_to_the_encoder():
    assert VideoOptions(crf=0).encoder_options() == {"crf": "0"}
    assert VideoOptions(codec="h264_nvenc", crf=20, preset="p5").encoder_options() == {
        "cq": "20", "preset": "p5"}


def test_unsupported_and_empty_inputs_are_named_and_the_rest_restored(tmp_path, small_onnx, capsys):
    write_image_file(tmp_path / "good.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    code, stdout, err = _restore(capsys, tmp_path / "good.png", tmp_path / "notes.txt",
                                 tmp_path / "empty.jpg", "-o", tmp_path / "out", "--model",
                                 small_onnx, "--quiet")
    assert code == 1 and "Traceback" not in err
    assert "notes.txt (not an image or video" in stdout and "empty.jpg (cannot read image" in stdout
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder: permissions cannot deny it")
def test_a_folder_that_cannot_be_read_is_named(tmp_path, small_onnx, capsys):
    (tmp_path / "in" / "locked").mkdir(parents=True)
    write_image_file(tmp_path / "in" / "a.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "in" / "locked").chmod(0)
    try:
        code, stdout, _ = _restore(capsys, tmp_path / "in", "-o", tmp_path / "out", "--model",
                                   small_onnx, "--quiet")
    finally:
        (tmp_path / "in" / "locked").chmod(0o755)
    assert code == 1 and "locked (cannot read the folder" in stdout
    assert (tmp_path / "out" / "a.png").is_file()


def test_segments_restored_apart_and_joined_equal_the_whole(tmp_path, small_onnx):
    """Keyframe-aligned segments (as Ray workers restore them), joined: the same frames, order and
    timestamps as the video restored whole; lossless (CRF 0, 4:4:4), so the same pixels too."""
    from hinet_deploy.runtime.video import join_segments, keyframe_times, segments

    make_video(tmp_path / "clip.mp4", 36, keyint=12)
    assert len(keyframe_times(tmp_path / "clip.mp4")[0]) == 3
    spans = segments(tmp_path / "clip.mp4", 3)
    assert len(spans) == 3 and spans[-1][1] is None
    options = VideoOptions(crf=0, pix_fmt="yuv444p")
    with Restorer(small_onnx) as restorer:
        restore_video(tmp_path / "clip.mp4", tmp_path / "whole.mp4", restorer, options)
        parts = []
        for i, span in enumerate(reversed(spans)):  # any order: each segment stands alone
            parts.insert(0, tmp_path / f"part{i}.mp4")
            restore_video(tmp_path / "clip.mp4", parts[0], restorer, options, span=span)
    join_segments(tmp_path / "clip.mp4", parts, tmp_path / "joined.mp4")

    def frames_and_times(path):
        with av.open(str(path)) as container:
            frames = list(container.decode(video=0))
            return [f.pts * f.time_base for f in frames], [f.to_ndarray(format="rgb24")
                                                           for f in frames]

    whole_times, whole = frames_and_times(tmp_path / "whole.mp4")
    joined_times, joined = frames_and_times(tmp_path / "joined.mp4")
    assert len(joined) == len(whole) == 36 and joined_times == whole_times
    for a, b in zip(joined, whole):
        np.testing.assert_array_equal(a, b)
    assert _streams(tmp_path / "joined.mp4") == [("video", "h264"), ("audio", "aac")]
