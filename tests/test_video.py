"""Videos keep everything but their pixels: frames and their times, rotation, colour signalling,
HDR10, bit depth and the other streams; what cannot be kept is refused or said. Every input here is
made by the test with PyAV (FFmpeg's encoders in its wheels)."""
from __future__ import annotations

import fractions
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from hinet_deploy.cli import main
from hinet_deploy.export.shipped import DEMO_CHECKPOINT

av = pytest.importorskip("av", reason="videos need PyAV (the video extra)")

FPS = 24
PATCH = (30, 199, 80)  # a flat colour: a denoiser leaves it as it is, so any shift is the pipeline's
# x265's master-display and max-cll of an HDR10 grade (BT.2020 primaries, D65, 1000/0.005 cd/m2).
HDR10_X265 = ("master-display=G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)"
              "L(10000000,50):max-cll=1000,400")


def make_video(path: Path, frames: int = 12, size=(96, 64), codec: str = "libx264",
               pix_fmt: str = "yuv420p", bframes: int = 0, tags=None, rotation=None,
               options=None, audio: bool = False, second_video: bool = False, muxer=None):
    """A flat-colour clip with a moving noisy band; `tags`: (matrix, primaries, transfer, range);
    `muxer`: the container's options."""
    width, height = size
    out = av.open(str(path), "w", options=muxer or {})
    opts = {"bf": str(bframes), **(options or {})} if codec == "libx264" else dict(options or {})
    video = out.add_stream(codec, rate=FPS, options=opts)
    video.width, video.height, video.pix_fmt = width, height, pix_fmt
    if tags:
        cc = video.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = tags
    if rotation is not None:
        video.set_display_rotation(rotation)
    other = None
    if second_video:
        other = out.add_stream("libx264", rate=FPS)
        other.width, other.height, other.pix_fmt = width, height, "yuv420p"
    sound = out.add_stream("aac", rate=48000) if audio else None
    deep = "10" in pix_fmt
    rng = np.random.default_rng(0)
    for i in range(frames):
        pixels = np.empty((height, width, 3), np.uint16 if deep else np.uint8)
        pixels[:] = np.array(PATCH) * (257 if deep else 1)
        band = slice((i * 4) % max(1, height - 8), (i * 4) % max(1, height - 8) + 8)
        pixels[band] = rng.integers(0, 65535 if deep else 255, pixels[band].shape)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb48le" if deep else "rgb24")
        if tags:
            frame = frame.reformat(format=pix_fmt, dst_colorspace=tags[0], dst_color_range=tags[3])
        frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
        out.mux(video.encode(frame))
        if other is not None:
            out.mux(other.encode(frame.reformat(format="yuv420p")))
    out.mux(video.encode(None))
    if other is not None:
        out.mux(other.encode(None))
    if sound is not None:
        for i in range(frames * 2):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = 48000, i * 1024
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    out.close()


def describe(path: Path) -> dict:
    """What a player sees: streams, frames and their times, rotation, colour tags, side data."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        times, rotation, side = [], None, set()
        for frame in container.decode(video):
            times.append(frame.pts)
            rotation = frame.rotation if rotation is None else rotation
            side |= {sd.type.name for sd in frame.side_data}
        container.seek(0)
        packets = {s.index: 0 for s in container.streams}
        for packet in container.demux():
            if packet.size:
                packets[packet.stream.index] += 1
        cc = video.codec_context
        return {"streams": [s.type for s in container.streams], "frames": len(times),
                "times": times, "rotation": rotation, "pix_fmt": cc.pix_fmt,
                "tags": (int(cc.colorspace), int(cc.color_primaries), int(cc.color_trc),
                         int(cc.color_range)), "side_data": side, "packets": packets,
                "size": (cc.width, cc.height)}


def restore(tmp_path, source: Path, model: Path, *extra) -> tuple[int, Path]:
    out = tmp_path / "out"
    code = main(["restore", str(source), "-o", str(out), "--model", str(model), "--quiet",
                 *map(str, extra)])
    return code, out / source.name


@pytest.mark.parametrize("suffix", [".avi", ".mp4", ".mkv"])
def test_b_frame_h264_with_aac_keeps_every_frame_time_and_stream(tmp_path, small_onnx, suffix):
    source = tmp_path / f"camera{suffix}"
    make_video(source, frames=20, bframes=3, audio=True)
    code, output = restore(tmp_path, source, small_onnx)
    assert code == 0
    before, after = describe(source), describe(output)
    assert after["frames"] == before["frames"] == 20
    assert after["streams"] == before["streams"] == ["video", "audio"]
    assert after["packets"][1] == before["packets"][1]  # every audio packet copied
    if suffix == ".avi":  # AVI stores no presentation times: the same times, in decoding order
        assert sorted(after["times"]) == sorted(before["times"])
    else:
        assert after["times"] == before["times"]
    assert after["size"] == before["size"]


def test_a_phone_videos_rotation_is_kept(tmp_path, small_onnx):
    source = tmp_path / "phone.mp4"
    make_video(source, rotation=90)
    code, output = restore(tmp_path, source, small_onnx)
    assert code == 0 and describe(source)["rotation"] == describe(output)["rotation"] == 90


def _first_frame(path: Path, matrix: str | None = "own") -> np.ndarray:
    """The first frame as a player shows it: decoded with the stream's own matrix and range (or,
    to show what a wrong one does, with `matrix`)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        own = {1: "ITU709", 5: "ITU601", 6: "ITU601", 9: "BT2020"}.get(int(frame.colorspace))
        return frame.to_ndarray(format="rgb24", src_colorspace=own if matrix == "own" else matrix,
                                src_color_range=int(frame.color_range) or None)


def _patch(rgb: np.ndarray) -> np.ndarray:
    return np.median(rgb[-8:, :].reshape(-1, 3), axis=0)  # below the moving noisy band


def test_bt709_hd_keeps_its_tags_and_its_colour(tmp_path):
    """With the demo model on a BT.709-tagged 1280x720 clip: tags (1, 1, 1, 1) out as in, and the
    flat patch as the player shows it within 3 levels of what the model makes of the frame the
    player shows (converted with BT.601, as before, green was 25 levels off)."""
    from hinet_deploy.runtime import Restorer

    source = tmp_path / "hd.mp4"
    make_video(source, frames=2, size=(1280, 720), tags=(1, 1, 1, 1))
    code, output = restore(tmp_path, source, DEMO_CHECKPOINT, "--mode", "whole")
    assert code == 0
    assert describe(output)["tags"] == describe(source)["tags"] == (1, 1, 1, 1)
    shown = _first_frame(source)
    assert np.abs(_patch(shown) - np.array(PATCH)).max() <= 2  # the input is what was asked for
    with Restorer(DEMO_CHECKPOINT, mode="whole") as model:
        expected = _patch(model(shown))
    assert np.abs(_patch(_first_frame(output)) - expected).max() <= 3
    assert np.abs(_patch(_first_frame(output, "ITU601")) - expected).max() > 3  # the test can fail


def test_hdr10_keeps_its_tags_depth_and_mastering_metadata(tmp_path, small_onnx, capsys):
    source = tmp_path / "hdr.mkv"
    make_video(source, codec="libx265", pix_fmt="yuv420p10le", tags=(9, 9, 16, 1),
               options={"x265-params": f"{HDR10_X265}:log-level=none"})
    before = describe(source)
    assert {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"} <= before["side_data"]
    code, output = restore(tmp_path, source, small_onnx, "--codec", "libx265")
    after = describe(output)
    assert code == 0 and after["tags"] == before["tags"] == (9, 9, 16, 1)
    assert after["pix_fmt"] == "yuv420p10le" and after["frames"] == before["frames"]
    assert {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"} <= after["side_data"]
    # H.264 cannot carry the mastering metadata: kept tags, 10 bits, and one line saying so.
    (tmp_path / "out").joinpath("hdr.mkv").unlink()
    code, output = restore(tmp_path, source, small_onnx, "--codec", "libx264")
    assert code == 0 and describe(output)["tags"] == (9, 9, 16, 1)
    assert "not carried by libx264: use --codec libx265" in capsys.readouterr().err


def test_two_video_streams_are_refused_by_name(tmp_path, small_onnx, capsys):
    source = tmp_path / "two.mkv"
    make_video(source, second_video=True)
    code, output = restore(tmp_path, source, small_onnx)
    assert code == 1 and not output.exists()
    assert "two.mkv has 2 video streams (0, 1)" in capsys.readouterr().out


def test_odd_sizes_are_encoded_whole_and_said(tmp_path, small_onnx, capsys):
    source = tmp_path / "odd.mp4"
    make_video(source, size=(97, 63), pix_fmt="yuv444p")
    code, output = restore(tmp_path, source, small_onnx, "--pix-fmt", "yuv420p")
    assert code == 0 and describe(output)["size"] == (97, 63)
    assert describe(output)["frames"] == 12
    assert "97x63 is odd, which yuv420p cannot hold: encoded yuv444p" in capsys.readouterr().err


def test_a_damaged_video_is_a_failure_with_both_counts(tmp_path, small_onnx, capsys):
    """An mp4 whose media data is cut short: the container declares 24 frames, fewer decode."""
    whole = tmp_path / "whole.mp4"
    make_video(whole, frames=24, size=(160, 120), muxer={"movflags": "faststart"})  # index first
    source = tmp_path / "damaged.mp4"
    source.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.6)])
    code, output = restore(tmp_path, source, small_onnx)
    said = capsys.readouterr().out
    assert code == 1 and not output.exists()
    assert "of 24 declared frames decoded" in said and "damaged.mp4" in said
    assert not list((tmp_path / "out").glob(".*"))  # no partial file left


FULL_DISK_CHILD = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from hinet_deploy.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _noise_image(path: Path, size) -> None:
    from PIL import Image

    pixels = np.random.default_rng(len(path.name)).integers(0, 256, (*size[::-1], 3), np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("big", ["c.png", "c.jpg", "c.tif", "c.mp4"])
def test_a_full_disk_stops_the_run_keeps_what_finished_and_a_rerun_completes(tmp_path, small_onnx,
                                                                           big):
    import subprocess
    import sys

    from hinet_deploy.runtime.image_files import read_image_file

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "b.jpg", "d.png"):
        _noise_image(inputs / name, (64, 48))
    if big.endswith(".mp4"):
        make_video(inputs / big, frames=12, size=(320, 240), options={"crf": "0"})
    else:
        _noise_image(inputs / big, (640, 480))
    out = tmp_path / "out"
    command = ["restore", str(inputs), "-o", str(out), "--model", str(small_onnx), "--quiet",
               "--crf", "0", "--pix-fmt", "yuv444p"]  # lossless: the video's output is large
    limit = 100_000  # bytes: the small outputs fit, the big one does not
    child = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(limit), *command],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 1, child.stderr[-2000:]
    assert "Traceback" not in child.stderr
    summary = child.stdout.strip().splitlines()[-1]
    assert "stopped: " in summary and "is full" in summary and "not tried" in summary
    written = sorted(p.name for p in out.iterdir())
    finished = ["a.png", "b.jpg"] + (["d.png"] if big.endswith(".mp4") else [])
    assert written == finished  # no partial file, hidden or not; nothing after the stop
    for name in finished:  # each whole: it decodes at its size
        assert read_image_file(out / name).pixels.shape[:2] == (48, 64)
    again = main(command)
    assert again == 0 and sorted(p.name for p in out.iterdir()) == sorted(["a.png", "b.jpg", big,
                                                                            "d.png"])


def test_a_container_that_cannot_hold_the_codec_gets_its_own_and_a_line(tmp_path, small_onnx,
                                                                      capsys):
    source = tmp_path / "clip.webm"
    make_video(source, frames=6, codec="libvpx-vp9")
    code, output = restore(tmp_path, source, small_onnx, "--codec", "libx264")
    assert code == 0 and describe(output)["frames"] == 6
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
    assert "libx264 cannot go into a .webm file: encoded with vp9" in capsys.readouterr().err


def test_hdr10_hevc_with_default_options_stays_hevc_10_bit_with_its_metadata(tmp_path, small_onnx):
    """No --codec: the output keeps the input's family (HEVC), depth and HDR10 metadata, and
    x265's own [info] lines stay off the terminal (the command's, in a child process)."""
    source = tmp_path / "hdr.mkv"
    make_video(source, codec="libx265", pix_fmt="yuv420p10le", tags=(9, 9, 16, 1),
               options={"x265-params": f"{HDR10_X265}:log-level=none"})
    run = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "restore", str(source), "-o",
                          str(tmp_path / "out"), "--model", str(small_onnx)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    output = tmp_path / "out" / "hdr.mkv"
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.name == "hevc"
    after = describe(output)
    assert after["pix_fmt"] == "yuv420p10le" and after["tags"] == (9, 9, 16, 1)
    assert {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"} <= after["side_data"]
    assert "x265 [info]" not in run.stderr and "x265 [info]" not in run.stdout
    verbose = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "restore", str(source),
                              "-o", str(tmp_path / "loud"), "--model", str(small_onnx),
                              "--verbose"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert verbose.returncode == 0 and "x265 [info]" in verbose.stderr


@pytest.mark.parametrize("codec, pix_fmt, suffix, family", [
    ("libvpx-vp9", "yuv420p", ".webm", "vp9"),
    ("libsvtav1", "yuv420p10le", ".mkv", "av1"),
    ("libx264", "yuv422p", ".mkv", "h264"),
    ("mpeg4", "yuv420p", ".avi", "h264"),  # no family to follow: H.264
])
def test_the_output_codec_follows_the_input(tmp_path, small_onnx, codec, pix_fmt, suffix, family):
    source = tmp_path / f"clip{suffix}"
    make_video(source, frames=6, codec=codec, pix_fmt=pix_fmt)
    code, output = restore(tmp_path, source, small_onnx)
    assert code == 0
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.codec.canonical_name == family
        assert stream.codec_context.format.name == (pix_fmt if codec != "mpeg4" else "yuv420p")


def test_restore_frames_keeps_times_tags_and_format_of_pyav_frames(tmp_path, small_onnx):
    """The Python way to restore a stream of PyAV frames: each comes back with its own time,
    pixel format and colour tags, converted with its own matrix (the same pixels `restore`
    writes for the file)."""
    from hinet_deploy.runtime import Restorer
    from hinet_deploy.runtime.video import restore_frames

    source = tmp_path / "hd.mkv"
    make_video(source, frames=5, size=(128, 96), tags=(1, 1, 1, 1), pix_fmt="yuv422p")
    with av.open(str(source)) as container:
        frames = list(container.decode(video=0))
    with Restorer(small_onnx) as restorer:
        restored = list(restore_frames(restorer, iter(frames)))
        own = [restorer(f.to_ndarray(format="rgb24", src_colorspace=1, src_color_range=1))
               for f in frames]
    assert [(f.pts, f.time_base) for f in restored] == [(f.pts, f.time_base) for f in frames]
    for before, after, pixels in zip(frames, restored, own):
        assert after.format.name == before.format.name == "yuv422p"
        assert (int(after.colorspace), int(after.color_primaries), int(after.color_trc),
                int(after.color_range)) == (1, 1, 1, 1)
        back = after.to_ndarray(format="rgb24", src_colorspace=1, src_color_range=1)
        trip = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(
            format="yuv422p", dst_colorspace=1, dst_color_range=1).to_ndarray(
            format="rgb24", src_colorspace=1, src_color_range=1)  # the same pixels' own round trip
        assert np.abs(back.astype(int) - trip).max() <= 1
    with pytest.raises(Exception, match="depth must be a whole number of at least 1, not 0"):
        list(restore_frames(lambda x: x, iter(frames), depth=0))


def test_a_crf_the_followed_encoder_cannot_take_is_that_inputs_failure(tmp_path, small_onnx,
                                                                       capsys):
    """--crf 60 is in SVT-AV1's range but not x264's: an H.264 input, whose output follows it to
    libx264, fails by name rather than being encoded at another quality in silence."""
    source = tmp_path / "clip.mp4"
    make_video(source, frames=3)
    code, output = restore(tmp_path, source, small_onnx, "--crf", "60")
    assert code == 1 and not output.exists()
    assert "--crf 60 is outside libx264's range 0-51 (libx264 follows the input's h264" in \
        capsys.readouterr().out
