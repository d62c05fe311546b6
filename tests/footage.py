"""Clips made the way cameras and FFmpeg's command-line tool mux them (imageio-ffmpeg's static
`ffmpeg`), not only the way PyAV writes: ADTS AAC in AVI, AAC in MPEG-TS, PCM in MOV, AC-3 and
Opus in Matroska, MP4 edit lists. And the facts tests compare: streams, frames, times, packets."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="needs FFmpeg's CLI: the `test` extra")
av = pytest.importorskip("av", reason="restoring videos needs PyAV: the `video` extra")

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
RATE = 24


def ffmpeg(*args) -> None:
    """FFmpeg's CLI, quiet; a failure shows its own message."""
    run = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                          *map(str, args)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def clip(path: Path, vcodec: str = "libx264", acodec: str | None = "aac", seconds: float = 2,
         size: str = "96x64", extra=(), audio_extra=()) -> Path:
    """A test-pattern clip (and a sine tone) encoded and muxed by the CLI in one go."""
    audio = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"] if acodec else []
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={RATE}:duration={seconds}", *audio,
           "-c:v", vcodec, "-pix_fmt", "yuv420p", *(["-c:a", acodec, *audio_extra] if acodec else []),
           *extra, path)
    return path


def avi_with_adts_aac(path: Path, seconds: float = 2) -> Path:
    """What OpenCV samples and many IP cameras write: H.264 and ADTS-framed AAC in AVI under the
    codec tag 0x00ff with no AudioSpecificConfig. FFmpeg 7 and later refuse to write ADTS under
    that tag, so the CLI muxes it under 0x1610 (an .aac file in ADTS and an H.264 stream, joined by
    stream copy) and the WAVEFORMATEX is then set to what those cameras write: tag 0x00ff, no
    extension (cbSize 0). PyAV reads it back as ADTS AAC without extradata."""
    import struct

    folder = path.parent
    ffmpeg("-f", "lavfi", "-i", f"sine=duration={seconds}", "-c:a", "aac", "-f", "adts",
           folder / "tone.aac")
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=96x64:rate={RATE}:duration={seconds}",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", folder / "picture.h264")
    ffmpeg("-r", RATE, "-i", folder / "picture.h264", "-i", folder / "tone.aac", "-c", "copy",
           "-map", "0:v", "-map", "1:a", "-tag:a", "0x1610", path)
    data = bytearray(path.read_bytes())
    strf = data.index(b"strf", data.index(b"auds")) + 8  # the audio stream's WAVEFORMATEX
    data[strf:strf + 2] = struct.pack("<H", 0x00FF)
    data[strf + 16:strf + 18] = struct.pack("<H", 0)
    path.write_bytes(bytes(data))
    return path


def describe(path: Path) -> dict:
    """Streams (type, codec), video frames and their times (seconds), audio packets."""
    with av.open(str(path)) as container:
        streams = [(s.type, s.codec_context.name if s.codec_context else None)
                   for s in container.streams]
        video = container.streams.video[0]
        times = [float(f.time) for f in container.decode(video)]
    with av.open(str(path)) as container:
        audio = [s for s in container.streams if s.type == "audio"]
        packets = sum(1 for p in container.demux(audio) if p.size) if audio else 0
    return {"streams": streams, "frames": len(times), "times": times, "audio_packets": packets}


def damage(path: Path, at: float = 0.5, count: int = 3000, seed: int = 0) -> Path:
    """`count` bytes in the middle of the file overwritten with noise (a bad sector, a torn copy)."""
    import numpy as np

    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + count] = np.random.default_rng(seed).bytes(min(count, len(data) - start))
    path.write_bytes(bytes(data))
    return path
