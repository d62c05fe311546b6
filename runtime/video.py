"""Videos through the Restorer, frame by frame, with PyAV (FFmpeg in its wheels; the `video` extra).

Decoding, restoring and encoding overlap (runtime.stream) and every queue between them is bounded,
so memory does not grow with the video's length. Frames keep their timestamps, so the output has the
input's frame count, frame rate and timing; audio and subtitle streams are copied packet for packet,
unchanged. Videos of more than 8 bits per sample are restored at 16 bits and written at 10 bits by
default. The output is written under a temporary name and renamed only when complete.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import atomic_path
from hinet_deploy.common.lazy import require
from hinet_deploy.runtime.stream import pipelined

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts",
                  ".wmv", ".flv"}
DEFAULT_CODEC = "libx264"  # H.264: plays everywhere
DEFAULT_CRF = 18  # x264/x265's "visually lossless" region; 0 is lossless
COPIED_STREAMS = ("audio", "subtitle")


@dataclass
class VideoOptions:
    codec: str = DEFAULT_CODEC
    crf: int | None = DEFAULT_CRF
    preset: str | None = None
    pix_fmt: str | None = None  # default: yuv420p, or yuv420p10le for deeper sources
    options: dict = field(default_factory=dict)  # more encoder options, FFmpeg's names

    def encoder_options(self) -> dict:
        opts = dict(self.options)
        if self.crf is not None:  # NVENC's constant-quality knob is `cq`; x264, x265, SVT-AV1: crf
            opts.setdefault("cq" if "nvenc" in self.codec else "crf", str(self.crf))
        if self.preset:
            opts.setdefault("preset", self.preset)
        return opts


@dataclass
class VideoReport:
    frames: int
    copied_streams: int


def _av():
    return require("av", "pip install 'hinet-deploy[video]'", "restoring videos")


def check_encoder(codec: str) -> None:
    av = _av()
    try:
        av.codec.Codec(codec, "w")
    except Exception as exc:  # PyAV's UnknownCodecError and kin
        offered = sorted(c for c in av.codecs_available
                         if c.startswith(("libx26", "h264", "hevc", "libsvtav1", "av1")))
        raise HinetDeployError(f"FFmpeg here has no {codec} encoder ({exc}); offered: "
                               f"{', '.join(offered)}") from exc


def _deep(stream) -> bool:
    fmt = stream.codec_context.format
    return fmt is not None and max((c.bits for c in fmt.components), default=8) > 8


def _events(container, video, copied, frame_format: str):
    """The input in order: ("frame", pixels, pts, time_base) and ("packet", packet) to copy."""
    for packet in container.demux([video, *copied]):
        if packet.stream is video:
            for frame in packet.decode():
                yield "frame", frame.to_ndarray(format=frame_format), frame.pts, frame.time_base
        elif packet.dts is not None:  # the demuxer's empty flush packets are not copied
            yield "packet", packet


def restore_video(src: Path, dst: Path, restore: Callable[[np.ndarray], np.ndarray],
                  options: VideoOptions | None = None, on_frame: Callable[[], None] | None = None,
                  total: Callable[[int | None], None] | None = None) -> VideoReport:
    """Restores every frame of `src` with `restore` (e.g. a Restorer) into `dst`."""
    av = _av()
    options = options or VideoOptions()
    check_encoder(options.codec)
    try:
        source = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise HinetDeployError(f"cannot read video {src}: {exc}") from exc
    try:
        if not source.streams.video:
            raise HinetDeployError(f"{src} has no video stream")
        video = source.streams.video[0]
        video.thread_type = "AUTO"  # FFmpeg's frame threads: decoding keeps up with inference
        copied = [s for s in source.streams if s.type in COPIED_STREAMS]
        if total is not None:
            total(video.frames or None)
        deep = _deep(video)
        with atomic_path(dst, suffix=f".partial{dst.suffix}") as tmp:
            report = _transcode(av, source, video, copied, tmp, restore, options, deep, on_frame)
    except av.error.FFmpegError as exc:
        raise HinetDeployError(f"FFmpeg failed on {src}: {exc}") from exc
    finally:
        source.close()
    return report


def _transcode(av, source, video, copied, path: Path, restore, options: VideoOptions, deep: bool,
               on_frame) -> VideoReport:
    frame_format = "rgb48le" if deep else "rgb24"
    output = av.open(str(path), mode="w")
    try:
        rate = video.average_rate or video.guessed_rate
        encoder = output.add_stream(options.codec, rate=rate, options=options.encoder_options())
        encoder.width, encoder.height = video.codec_context.width, video.codec_context.height
        encoder.pix_fmt = options.pix_fmt or ("yuv420p10le" if deep else "yuv420p")
        encoder.time_base = video.time_base
        copies = {s.index: output.add_stream_from_template(s) for s in copied}
        for s in copied:
            copies[s.index].metadata.update(s.metadata)
        frames = 0

        def restore_event(event):
            if event[0] == "frame":
                return ("frame", restore(event[1]), *event[2:])
            return event

        for event in pipelined(restore_event, _events(source, video, copied, frame_format)):
            if event[0] == "packet":
                packet = event[1]
                packet.stream = copies[packet.stream.index]
                output.mux(packet)
                continue
            _, pixels, pts, time_base = event
            frame = av.VideoFrame.from_ndarray(pixels, format=frame_format)
            frame.pts, frame.time_base = pts, time_base
            output.mux(encoder.encode(frame))
            frames += 1
            if on_frame is not None:
                on_frame()
        output.mux(encoder.encode(None))
    finally:
        output.close()
    return VideoReport(frames, len(copies))
