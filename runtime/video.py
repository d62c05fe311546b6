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


def _events(container, video, copied, frame_format: str, span=None):
    """The input in order: ("frame", pixels, pts, time_base) and ("packet", packet) to copy.
    `span` (start, end): only frames with start <= pts < end, start being a keyframe's pts."""
    start, end = span or (None, None)
    if start is not None:
        container.seek(start, stream=video)  # lands on the keyframe at or before start
    for packet in container.demux([video, *copied]):
        if packet.stream is video:
            for frame in packet.decode():
                if start is not None and frame.pts < start:
                    continue
                if end is not None and frame.pts >= end:
                    return  # decoded in presentation order: the rest is later still
                yield "frame", frame.to_ndarray(format=frame_format), frame.pts, frame.time_base
        elif packet.dts is not None:  # the demuxer's empty flush packets are not copied
            yield "packet", packet


def _copied_streams(source) -> list:
    return [s for s in source.streams if s.type in COPIED_STREAMS]


def _copy_streams_into(output, streams) -> dict:
    """Output streams taking the given input streams' packets unchanged, with their metadata
    (language, title), by input stream index."""
    copies = {s.index: output.add_stream_from_template(s) for s in streams}
    for s in streams:
        copies[s.index].metadata.update(s.metadata)
    return copies


def keyframe_times(src: Path) -> tuple[list[int], int]:
    """Presentation times of the video's keyframes (its stream's time base), read from the packets
    without decoding: the places a video can be cut and each piece decoded alone; and the end of
    its last frame."""
    av = _av()
    with av.open(str(src)) as container:
        video = container.streams.video[0]
        keys, end = [], 0
        for packet in container.demux(video):
            if packet.pts is None:
                continue
            end = max(end, packet.pts + (packet.duration or 0))
            if packet.is_keyframe:
                keys.append(packet.pts)
        return sorted(keys), end


def segments(src: Path, count: int) -> list[tuple[int, int | None]]:
    """Up to `count` keyframe-aligned spans [start, end) of about equal length covering the video
    (the last open-ended); fewer where the video has fewer keyframes."""
    keys, end = keyframe_times(src)
    if count <= 1 or len(keys) <= 1:
        return [(keys[0] if keys else 0, None)]
    wanted = [keys[0] + (end - keys[0]) * i / count for i in range(1, count)]
    cuts = sorted({min(keys[1:], key=lambda k: abs(k - w)) for w in wanted})
    starts = [keys[0], *cuts]
    return list(zip(starts, [*cuts, None]))


def join_segments(src: Path, parts: list[Path], dst: Path) -> int:
    """One video from restored segments, in order, with the source's audio and subtitle streams
    copied: packets are remuxed, never re-encoded. Returns the number of video packets."""
    av = _av()
    with atomic_path(dst, suffix=f".partial{dst.suffix}") as tmp:
        output = av.open(str(tmp), mode="w")
        source = av.open(str(src))
        try:
            with av.open(str(parts[0])) as first:
                video = output.add_stream_from_template(first.streams.video[0])
            copied = _copied_streams(source)
            copies = _copy_streams_into(output, copied)
            count = 0
            for part in parts:
                with av.open(str(part)) as container:
                    for packet in container.demux(container.streams.video[0]):
                        if packet.dts is not None:
                            packet.stream = video
                            output.mux(packet)
                            count += 1
            for packet in source.demux(copied) if copied else ():
                if packet.dts is not None:
                    packet.stream = copies[packet.stream.index]
                    output.mux(packet)
        finally:
            source.close()
            output.close()
    return count


def restore_video(src: Path, dst: Path, restore: Callable[[np.ndarray], np.ndarray],
                  options: VideoOptions | None = None, on_frame: Callable[[], None] | None = None,
                  total: Callable[[int | None], None] | None = None,
                  span: tuple[int, int | None] | None = None) -> VideoReport:
    """Restores every frame of `src` with `restore` (e.g. a Restorer) into `dst`; with `span`
    (from segments()), only that segment's frames, and no other streams (join_segments adds
    them)."""
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
        copied = [] if span else _copied_streams(source)
        if total is not None:
            total(video.frames or None)
        deep = _deep(video)
        with atomic_path(dst, suffix=f".partial{dst.suffix}") as tmp:
            report = _transcode(av, source, video, copied, tmp, restore, options, deep, on_frame,
                                span)
    except av.error.FFmpegError as exc:
        raise HinetDeployError(f"FFmpeg failed on {src}: {exc}") from exc
    finally:
        source.close()
    return report


def _transcode(av, source, video, copied, path: Path, restore, options: VideoOptions, deep: bool,
               on_frame, span=None) -> VideoReport:
    frame_format = "rgb48le" if deep else "rgb24"
    output = av.open(str(path), mode="w")
    try:
        rate = video.average_rate or video.guessed_rate
        encoder = output.add_stream(options.codec, rate=rate, options=options.encoder_options())
        encoder.width, encoder.height = video.codec_context.width, video.codec_context.height
        encoder.pix_fmt = options.pix_fmt or ("yuv420p10le" if deep else "yuv420p")
        encoder.time_base = video.time_base
        copies = _copy_streams_into(output, copied)
        frames = 0

        def restore_event(event):
            if event[0] == "frame":
                return ("frame", restore(event[1]), *event[2:])
            return event

        events = _events(source, video, copied, frame_format, span)
        for event in pipelined(restore_event, events):
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
