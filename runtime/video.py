"""Videos through the Restorer, frame by frame, with PyAV (FFmpeg in its wheels; the `video` extra).

Nothing but the pixels changes. Read from the input and carried to the output:
- every frame, with its presentation time (decoders give frames in presentation order, but a
  container without presentation times, such as AVI with B-frames, hands them the packets' times in
  decoding order; a small reorder window gives each frame its own), the stream's start time;
- the colour signalling (range, matrix, primaries, transfer): frames go to RGB and back with the
  input's own matrix and range, and the output is tagged with them; >8-bit sources are restored at
  16 bits and written at 10; HDR10's mastering display and content light level go into libx265's
  stream, and a line says when another encoder cannot carry them;
- the display matrix (a phone's rotation) and the stream's and container's metadata and chapters;
- audio, subtitle, attachment and data streams, copied packet for packet, and cover pictures;
  a stream the output container cannot hold is named in a line and left out.
A file with two video streams to restore is refused by name. An odd width or height, which 4:2:0
and 4:2:2 cannot hold, is encoded 4:4:4 with a line saying so. Fewer frames decoded than the
container declares, or fewer packets in the written file than frames restored, is a failure with
both counts and FFmpeg's own message, and the partial output is removed. Decoding, restoring and
encoding overlap (runtime.stream) and every queue is bounded, so memory does not grow with length.
"""
from __future__ import annotations

import heapq
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hinet_deploy.common.errors import DISK_FULL_ERRNOS, DiskFullError, HinetDeployError
from hinet_deploy.common.files import atomic_path
from hinet_deploy.common.lazy import require
from hinet_deploy.common.untrusted import check_pixels
from hinet_deploy.runtime.stream import pipelined

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts",
                  ".wmv", ".flv"}
DEFAULT_CODEC = "libx264"  # H.264: plays everywhere
DEFAULT_CRF = 18  # x264/x265's "visually lossless" region; 0 is lossless
COPIED_STREAMS = ("audio", "subtitle", "attachment", "data")
# Frames a decoder may hold back before it outputs one: FFmpeg's H.264/HEVC reorder depth is at most
# 16 (its MAX_DELAYED_PIC_COUNT), so 16 presentation times in hand always include the next frame's.
REORDER_WINDOW = 16
# FFmpeg's AVColorSpace values that swscale converts with (others: its BT.601 default, as FFmpeg).
# SMPTE 170M is BT.601's matrix; BT.2020 CL converts with the NCL coefficients.
SWSCALE_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
UNSPECIFIED = 2  # AVCOL_SPC / AVCOL_PRI / AVCOL_TRC_UNSPECIFIED
SUBSAMPLED = ("yuv420", "yuv422", "yuvj420", "yuvj422", "nv12", "nv21", "p010")


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
    notes: list[str] = field(default_factory=list)  # what was done that the user should know
    decode_error: str | None = None  # FFmpeg's last message on a damaged packet


@dataclass(frozen=True)
class VideoFacts:
    """What the output takes from the input's video stream, read from its first frame."""

    width: int
    height: int
    deep: bool  # more than 8 bits per sample
    colorspace: int
    primaries: int
    transfer: int
    color_range: int
    display_matrix: tuple[int, ...] | None
    mastering: bytes | None  # AVMasteringDisplayMetadata
    light_level: bytes | None  # AVContentLightMetadata
    declared_frames: int  # 0 where the container does not say


def _av():
    av = require("av", "restoring videos")
    if av.logging.get_level() is None:
        # FFmpeg's own error lines then end PyAV's exception messages ("last error log: [mjpeg]
        # Invalid pts ..."), which the failures show; they are kept off the terminal.
        av.logging.set_level(av.logging.ERROR)
        ffmpeg_log = logging.getLogger("libav")
        ffmpeg_log.propagate = False
        ffmpeg_log.addHandler(logging.NullHandler())
    return av


def check_encoder(codec: str) -> None:
    av = _av()
    try:
        av.codec.Codec(codec, "w")
    except Exception as exc:  # PyAV's UnknownCodecError and kin
        offered = sorted(c for c in av.codecs_available
                         if c.startswith(("libx26", "h264", "hevc", "libsvtav1", "av1")))
        raise HinetDeployError(f"FFmpeg here has no {codec} encoder ({exc}); offered: "
                               f"{', '.join(offered)}") from exc


# The quality range of each encoder's constant-quality knob (x264/x265 crf: 0-51, SVT-AV1 crf:
# 0-63, NVENC cq: 0-51; their documentation). Others are passed through unchecked.
CRF_RANGE = {"libx264": (0, 51), "libx265": (0, 51), "libsvtav1": (0, 63), "libaom-av1": (0, 63),
             "libvpx-vp9": (0, 63), "libvpx": (4, 63),
             "h264_nvenc": (0, 51), "hevc_nvenc": (0, 51), "av1_nvenc": (0, 51)}


def check_video_options(options: VideoOptions) -> None:
    """The encoder exists and encodes video, its quality is in its range, the pixel format is one
    FFmpeg knows and the encoder takes: one line each, before any work."""
    av = _av()
    check_encoder(options.codec)
    codec = av.codec.Codec(options.codec, "w")
    if codec.type != "video":
        raise HinetDeployError(f"--codec {options.codec} is {'an' if codec.type == 'audio' else 'a'}"
                               f" {codec.type} encoder, not a video one (libx264, libx265, ...)")
    low, high = CRF_RANGE.get(options.codec, (None, None))
    if options.crf is not None and low is not None and not low <= options.crf <= high:
        raise HinetDeployError(f"--crf {options.crf} is outside {options.codec}'s range "
                               f"{low}-{high}")
    if options.pix_fmt:
        try:
            av.video.format.VideoFormat(options.pix_fmt)
        except (ValueError, av.error.FFmpegError) as exc:
            raise HinetDeployError(f"--pix-fmt {options.pix_fmt} is not a pixel format FFmpeg "
                                   f"knows ({exc})") from exc
        offered = [f.name for f in (codec.video_formats or [])]
        if offered and options.pix_fmt not in offered:
            raise HinetDeployError(f"{options.codec} does not take --pix-fmt {options.pix_fmt}; "
                                   f"it takes {', '.join(offered)}")


def _is_picture(stream) -> bool:
    """A cover picture (a video stream holding one still), copied rather than restored."""
    return bool(int(stream.disposition) & int(_av().stream.Disposition.attached_pic))


def main_video(container, src):
    """The one video stream to restore; a second one is refused by name."""
    videos = [s for s in container.streams.video if not _is_picture(s)]
    if not videos:
        raise HinetDeployError(f"{src} has no video stream")
    if len(videos) > 1:
        raise HinetDeployError(
            f"{src} has {len(videos)} video streams ({', '.join(str(s.index) for s in videos)}); "
            f"restore takes one: extract each with ffmpeg -i {Path(src).name} -map 0:v:N -c copy")
    return videos[0]


def _side_data(frame, name: str) -> bytes | None:
    kind = getattr(_av().sidedata.sidedata.Type, name)
    data = frame.side_data.get(kind)
    return None if data is None else bytes(data)


def probe(src: Path, max_pixels: int | None = None) -> VideoFacts:
    """The facts of the video stream (its first frame's colour tags and side data); a frame size
    over the pixel limit (common.untrusted) is refused from the stream's header."""
    av = _av()
    with av.open(str(src)) as container:
        video = main_video(container, src)
        check_pixels(video.codec_context.width, video.codec_context.height,
                     f"the video {src}", max_pixels)
        fmt = video.codec_context.format
        deep = fmt is not None and max((c.bits for c in fmt.components), default=8) > 8
        frame = next(container.decode(video), None)
        if frame is None:
            raise HinetDeployError(f"{src}: no frame of its video stream could be decoded")
        matrix = _side_data(frame, "DISPLAYMATRIX")
        return VideoFacts(
            frame.width, frame.height, deep, int(frame.colorspace), int(frame.color_primaries),
            int(frame.color_trc), int(frame.color_range),
            struct.unpack("9i", matrix) if matrix is not None else None,
            _side_data(frame, "MASTERING_DISPLAY_METADATA"),
            _side_data(frame, "CONTENT_LIGHT_LEVEL"), int(video.frames or 0))


def x265_hdr_params(mastering: bytes | None, light_level: bytes | None) -> str | None:
    """x265's master-display and max-cll from FFmpeg's side data structs (AVRational pairs:
    primaries R, G, B and white point in CIE xy, luminance min and max in cd/m2), in x265's units
    (0.00002 for xy, 0.0001 cd/m2; its order G, B, R)."""
    parts = []
    if mastering is not None and len(mastering) >= 88:
        values = struct.unpack("20i2i", mastering[:88])
        has_primaries, has_luminance = values[20], values[21]
        ratio = [values[i] / values[i + 1] if values[i + 1] else 0.0 for i in range(0, 20, 2)]
        (rx, ry, gx, gy, bx, by, wx, wy, low, high) = ratio
        if has_primaries and has_luminance:
            xy = [round(v / 0.00002) for v in (gx, gy, bx, by, rx, ry, wx, wy)]
            parts.append("master-display=G({},{})B({},{})R({},{})WP({},{})".format(*xy)
                         + f"L({round(high / 0.0001)},{round(low / 0.0001)})")
    if light_level is not None and len(light_level) >= 8:
        max_cll, max_fall = struct.unpack("2I", light_level[:8])
        parts.append(f"max-cll={max_cll},{max_fall}")
    return ":".join(parts) or None


def keyframe_times(src: Path) -> tuple[list[int], int]:
    """Presentation times of the video's keyframes (its stream's time base), read from the packets
    without decoding: the places a video can be cut and each piece decoded alone; and the end of
    its last frame."""
    av = _av()
    with av.open(str(src)) as container:
        video = main_video(container, src)
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


class PresentationOrder:
    """Gives each frame, in decoder output order, the smallest presentation time not yet given out
    among the next REORDER_WINDOW: the frames' own times where they rise already, the right ones
    where a container handed them its decoding-order times (AVI with B-frames). A frame without a
    time gets the one after the latest seen (`step`: a frame's duration in the stream's time base)."""

    def __init__(self, step: int):
        self.step, self.pending, self.times, self.latest = step, deque(), [], None

    def push(self, frame) -> list:
        """(frame, pts) pairs ready to encode."""
        pts = frame.pts
        if pts is None:
            pts = -self.step if self.latest is None else self.latest
            pts += self.step
        self.latest = pts if self.latest is None else max(self.latest, pts)
        heapq.heappush(self.times, pts)
        self.pending.append(frame)
        if len(self.pending) > REORDER_WINDOW:
            return [(self.pending.popleft(), heapq.heappop(self.times))]
        return []

    def flush(self) -> list:
        return [(self.pending.popleft(), heapq.heappop(self.times)) for _ in range(len(self.pending))]


def _events(container, video, copied, span, step: int, counts: dict):
    """The input in order: ("frame", frame, pts) of the video (those of `span` only) in presentation
    order with their own times, and ("packet", packet) of the copied streams; FFmpeg's errors on
    damaged video packets are counted."""
    av = _av()
    order = PresentationOrder(step)
    start, end = span or (None, None)
    if start is not None:
        container.seek(start, stream=video)  # lands on the keyframe at or before start
    for packet in container.demux([video, *copied]):
        if packet.stream is not video:
            if packet.dts is not None:  # the demuxer's empty flush packets are not copied
                yield "packet", packet
            continue
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as exc:  # a damaged packet: counted and said
            counts["errors"] += 1
            counts["last_error"] = str(exc)
            continue
        for frame in frames:
            if start is not None and frame.pts is not None and frame.pts < start:
                continue
            if end is not None and frame.pts is not None and frame.pts >= end:
                break
            for ready in order.push(frame):
                yield ("frame", *ready)
    for ready in order.flush():
        yield ("frame", *ready)


def _copied_streams(source, video) -> list:
    return [s for s in source.streams if s.type in COPIED_STREAMS
            or (s.type == "video" and s is not video and _is_picture(s))]


def _copy_streams_into(output, streams, notes: list[str]) -> dict:
    """Output streams taking the given input streams' packets unchanged, with their metadata
    (language, title), by input stream index; streams the container cannot hold are named and
    left out."""
    copies = {}
    for s in streams:
        codec = s.codec_context.name if s.codec_context is not None else None
        if codec is not None and codec not in output.supported_codecs:
            notes.append(f"{s.type} stream {s.index} ({codec}) cannot go into a "
                         f"{Path(output.name).suffix} file: left out")
            continue
        copies[s.index] = output.add_stream_from_template(s)
        copies[s.index].metadata.update(s.metadata)
    return copies


def _pixel_format(options: VideoOptions, facts: VideoFacts, notes: list[str]) -> str:
    pix_fmt = options.pix_fmt or ("yuv420p10le" if facts.deep else "yuv420p")
    odd = facts.width % 2 or facts.height % 2
    if odd and pix_fmt.startswith(SUBSAMPLED):
        full = ("yuv444p10le" if "10" in pix_fmt else "yuv444p")
        notes.append(f"{facts.width}x{facts.height} is odd, which {pix_fmt} cannot hold: encoded "
                     f"{full} (the full size, every pixel)")
        return full
    return pix_fmt


def _codec_for(output, options: VideoOptions, notes: list[str]) -> VideoOptions:
    """The options with an encoder the output container holds: the container's own default where
    the one asked for cannot go into it (H.264 into WebM), said in a line."""
    if options.codec in output.supported_codecs:
        return options
    chosen = output.default_video_codec
    notes.append(f"{options.codec} cannot go into a {Path(output.name).suffix} file: encoded "
                 f"with {chosen} (--codec chooses another it holds)")
    crf = options.crf if chosen not in CRF_RANGE or options.crf is None else \
        min(max(options.crf, CRF_RANGE[chosen][0]), CRF_RANGE[chosen][1])
    return VideoOptions(chosen, crf, None, options.pix_fmt, dict(options.options))


def _encoder_options(options: VideoOptions, facts: VideoFacts, notes: list[str]) -> dict:
    """The encoder's options, with HDR10's metadata where the encoder carries it."""
    opts = options.encoder_options()
    hdr = x265_hdr_params(facts.mastering, facts.light_level)
    if hdr is not None and options.codec == "libx265":
        given = opts.get("x265-params")
        opts["x265-params"] = f"{given}:{hdr}" if given else hdr
    elif hdr is not None:
        notes.append(f"the HDR mastering display / light level metadata is not carried by "
                     f"{options.codec}: use --codec libx265 to keep it")
    return opts


def _tag_encoder(encoder, facts: VideoFacts) -> None:
    """The input's colour signalling and display matrix on the output stream."""
    cc = encoder.codec_context
    cc.colorspace, cc.color_primaries = facts.colorspace, facts.primaries
    cc.color_trc, cc.color_range = facts.transfer, facts.color_range
    if facts.display_matrix is not None:
        encoder.set_display_matrix(list(facts.display_matrix))


def restore_video(src: Path, dst: Path, restore: Callable[[np.ndarray], np.ndarray],
                  options: VideoOptions | None = None, on_frame: Callable[[], None] | None = None,
                  total: Callable[[int | None], None] | None = None,
                  span: tuple[int, int | None] | None = None,
                  log: Callable[[str], None] | None = None,
                  max_pixels: int | None = None) -> VideoReport:
    """Restores every frame of `src` with `restore` (e.g. a Restorer) into `dst`; with `span`
    (from segments()), only that segment's frames, and no other streams (join_segments adds
    them). `log` hears what was done that the user should know (also in the report's notes)."""
    av = _av()
    options = options or VideoOptions()
    check_video_options(options)
    try:
        facts = probe(src, max_pixels)
        source = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise HinetDeployError(f"cannot read video {src}: {exc}") from exc
    try:
        video = main_video(source, src)
        video.thread_type = "AUTO"  # FFmpeg's frame threads: decoding keeps up with inference
        if total is not None:
            total(facts.declared_frames or None)
        with atomic_path(dst, suffix=f".partial{dst.suffix}") as tmp:
            report = _transcode(av, source, video, tmp, restore, options, facts, on_frame, span)
            _check_written(av, src, tmp, report, facts, span)
            _sync(tmp)
    except (av.error.FFmpegError, OSError) as exc:
        if getattr(exc, "errno", None) in DISK_FULL_ERRNOS:
            raise DiskFullError(f"the disk of {dst.parent} is full ({exc.strerror}): {dst.name} "
                                f"could not be written") from exc
        if not isinstance(exc, av.error.FFmpegError):
            raise
        raise HinetDeployError(f"FFmpeg failed on {src}: {exc}") from exc
    finally:
        source.close()
    for note in report.notes:
        (log or (lambda m: None))(f"{src}: {note}")
    return report


def _sync(path: Path) -> None:
    """The bytes on the disk before the file gets its name: a full disk fails here, not later."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def frame_count(path: Path) -> int:
    """The video frames a written file holds (its video stream's packets; nothing is decoded)."""
    av = _av()
    with av.open(str(path)) as written:
        stream = written.streams.video[0]
        return sum(1 for p in written.demux(stream) if p.size)


def _check_written(av, src: Path, path: Path, report: VideoReport, facts: VideoFacts, span):
    """Every declared frame decoded, every restored frame in the written file."""
    if span is None and facts.declared_frames and report.frames < facts.declared_frames:
        why = f" (FFmpeg: {report.decode_error})" if report.decode_error else ""
        raise HinetDeployError(f"{src}: {report.frames} of {facts.declared_frames} declared frames "
                               f"decoded{why}: the file is damaged or cut short")
    packets = frame_count(path)
    if packets != report.frames:
        raise HinetDeployError(f"{path.name} holds {packets} video frames of the {report.frames} "
                               f"restored from {src}: not written whole")


def _transcode(av, source, video, path: Path, restore, options: VideoOptions, facts: VideoFacts,
               on_frame, span=None) -> VideoReport:
    frame_format = "rgb48le" if facts.deep else "rgb24"
    matrix = SWSCALE_MATRIX.get(facts.colorspace)
    color_range = facts.color_range or None  # unspecified: swscale's limited-range default
    notes: list[str] = []
    output = av.open(str(path), mode="w")
    try:
        output.metadata.update(source.metadata)
        chapters = source.chapters()
        if chapters:
            output.set_chapters(chapters)
        rate = video.average_rate or video.guessed_rate
        options = _codec_for(output, options, notes)
        encoder = output.add_stream(options.codec, rate=rate,
                                    options=_encoder_options(options, facts, notes))
        encoder.width, encoder.height = facts.width, facts.height
        encoder.pix_fmt = _pixel_format(options, facts, notes)
        encoder.time_base = video.time_base
        encoder.metadata.update(video.metadata)
        _tag_encoder(encoder, facts)
        copied = [] if span else _copied_streams(source, video)
        copies = _copy_streams_into(output, copied, notes)
        step = max(1, round(1 / (rate * video.time_base))) if rate and video.time_base else 1
        counts = {"errors": 0, "last_error": None}
        frames = 0

        def restore_event(event):
            if event[0] == "frame":
                _, frame, pts = event
                pixels = frame.to_ndarray(format=frame_format, src_colorspace=matrix,
                                          src_color_range=color_range)
                return "frame", restore(pixels), pts
            return event

        events = _events(source, video, [s for s in copied if s.index in copies], span, step,
                         counts)
        for event in pipelined(restore_event, events):
            if event[0] == "packet":
                packet = event[1]
                packet.stream = copies[packet.stream.index]
                output.mux(packet)
                continue
            _, pixels, pts = event
            frame = av.VideoFrame.from_ndarray(pixels, format=frame_format).reformat(
                format=encoder.pix_fmt, dst_colorspace=matrix, dst_color_range=color_range)
            frame.pts, frame.time_base = pts, video.time_base
            output.mux(encoder.encode(frame))
            frames += 1
            if on_frame is not None:
                on_frame()
        output.mux(encoder.encode(None))
    finally:
        output.close()
    if counts["errors"]:
        notes.append(f"{counts['errors']} damaged video packets skipped (FFmpeg: "
                     f"{counts['last_error']})")
    return VideoReport(frames, len(copies), notes, counts["last_error"])


def join_segments(src: Path, parts: list[Path], dst: Path) -> int:
    """One video from restored segments, in order, with the source's other streams copied:
    packets are remuxed, never re-encoded. Returns the number of video packets."""
    av = _av()
    with atomic_path(dst, suffix=f".partial{dst.suffix}") as tmp:
        output = av.open(str(tmp), mode="w")
        source = av.open(str(src))
        try:
            output.metadata.update(source.metadata)
            with av.open(str(parts[0])) as first:
                video = output.add_stream_from_template(first.streams.video[0])
            copies = _copy_streams_into(output, _copied_streams(source, main_video(source, src)),
                                        [])
            count = 0
            for part in parts:
                with av.open(str(part)) as container:
                    for packet in container.demux(container.streams.video[0]):
                        if packet.dts is not None:
                            packet.stream = video
                            output.mux(packet)
                            count += 1
            for packet in source.demux([source.streams[i] for i in copies]) if copies else ():
                if packet.dts is not None:
                    packet.stream = copies[packet.stream.index]
                    output.mux(packet)
        finally:
            source.close()
            output.close()
        _sync(tmp)
    return count
