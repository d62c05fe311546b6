"""Footage straight from cameras and other tools, made with FFmpeg's command-line tool: each clip
restores with its video frames, their times, and its audio packets kept, whatever its container
took as the input was muxed (README: Restore your photos and videos)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from footage import avi_with_adts_aac, av, clip, describe, ffmpeg


def _restore(source, out, model, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "restore", str(source), "-o",
                           str(out), "--model", str(model), "--quiet", *extra],
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def _kept(source, restored, ordered: bool = True) -> None:
    before, after = describe(source), describe(restored)
    assert [t for t, _ in after["streams"]] == [t for t, _ in before["streams"]]
    assert [c for t, c in after["streams"] if t != "video"] == \
        [c for t, c in before["streams"] if t != "video"]  # copied, never re-encoded
    assert after["frames"] == before["frames"]
    # AVI holds no presentation times: frames come back with decoding-order times, the same set
    times = (lambda t: t) if ordered else sorted
    assert times(after["times"]) == pytest.approx(times(before["times"]), abs=1e-6)
    assert after["audio_packets"] == before["audio_packets"]


def _mp4_with_an_edit_list(path):
    """A cut made by stream copy from 0.3 s: it starts at the keyframe before, and the MP4's edit
    list says to skip to the cut (what phone editors and `ffmpeg -ss -c copy` write)."""
    whole = clip(path.with_name("whole.mp4"), seconds=2, extra=["-g", "12", "-bf", "2"])
    ffmpeg("-ss", "0.3", "-i", whole, "-c", "copy", path)
    return path


CLIPS = {
    "avi-adts-aac": lambda p: avi_with_adts_aac(p.with_suffix(".avi")),
    "ts-aac": lambda p: clip(p.with_suffix(".ts"), "libx264", "aac"),
    "mov-pcm": lambda p: clip(p.with_suffix(".mov"), "libx264", "pcm_s16le"),
    "mkv-ac3": lambda p: clip(p.with_suffix(".mkv"), "libx264", "ac3"),
    "mkv-opus": lambda p: clip(p.with_suffix(".mkv"), "libx264", "libopus"),
    "webm-vp9-opus": lambda p: clip(p.with_suffix(".webm"), "libvpx-vp9", "libopus"),
    "mp4-edit-list": lambda p: _mp4_with_an_edit_list(p.with_suffix(".mp4")),
    "mp4-mp3": lambda p: clip(p.with_suffix(".mp4"), "libx264", "libmp3lame"),
}


@pytest.mark.parametrize("kind", list(CLIPS))
def test_real_world_clips_restore_with_frames_times_and_audio_kept(tmp_path, small_onnx, kind):
    (tmp_path / "src").mkdir()
    source = CLIPS[kind](tmp_path / "src" / "clip")
    run = _restore(source, tmp_path / "out", small_onnx)
    assert run.returncode == 0, run.stdout + run.stderr
    _kept(source, tmp_path / "out" / source.name, ordered=source.suffix != ".avi")


def test_the_camera_avi_says_how_its_audio_was_kept(tmp_path, small_onnx):
    source = avi_with_adts_aac(tmp_path / "cam.avi")
    with av.open(str(source)) as container:  # the fixture is what cameras write
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac" and not audio.codec_context.extradata
    plain = subprocess.run([sys.executable, "-c", "import av, sys\n"
                            "src = av.open(sys.argv[1]); out = av.open(sys.argv[2], 'w')\n"
                            "a = out.add_stream_from_template(src.streams.audio[0])\n"
                            "for p in src.demux(src.streams.audio[0]):\n"
                            "    if p.dts is not None: p.stream = a; out.mux(p)\n"
                            "out.close()", str(source), str(tmp_path / "plain.avi")],
                           capture_output=True, text=True)
    assert plain.returncode != 0  # a plain stream copy fails: the case the remedies are for
    run = _restore(source, tmp_path / "out", small_onnx)
    assert run.returncode == 0, run.stderr
    assert "audio stream 1 (aac) copied with ADTS AAC tagged 0x1610" in run.stderr


def test_a_stream_no_remedy_keeps_is_named_and_left_out(tmp_path, small_onnx):
    """PCM into WebM (which holds Opus and Vorbis only): named, left out, the video restored."""
    source = clip(tmp_path / "pcm.mkv", "libx264", "pcm_s16le")
    run = _restore(source, tmp_path / "out.webm", small_onnx)
    assert run.returncode == 0, run.stderr
    assert "audio stream 1 (pcm_s16le) cannot go into a .webm file: left out" in run.stderr
    assert [t for t, _ in describe(tmp_path / "out.webm")["streams"]] == ["video"]
