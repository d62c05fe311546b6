"""Videos through the Restorer, frame by frame, with PyAV (FFmpeg in its wheels; the `video` extra).

Nothing but the pixels changes. Read from the input and carried to the output:
- every frame, with its presentation time (decoders give frames in presentation order, but a
  container without presentation times, such as AVI with B-frames, hands them the packets' times in
  decoding order; a small reorder window gives each frame its own), the stream's start time;
- the codec family (HEVC stays HEVC, AV1 AV1, VP9 VP9, H.264 and the rest H.264), bit depth and
  chroma, unless the user chooses (follow_input);
- the colour signalling (range, matrix, primaries, transfer): frames go to RGB and back with the
  input's own matrix and range, and the output is tagged with them; >8-bit sources are restored at
  16 bits; HDR10's mastering display and content light level go into libx265's stream, and a line
  says when another encoder cannot carry them;
- the display matrix (a phone's rotation) and the stream's and container's metadata and chapters;
- audio, subtitle, attachment and data streams, copied packet for packet, and cover pictures; a
  stream the output container does not take as it was muxed is tried with FFmpeg's CLI remedies
  on its first packets, and one none keeps is named in a line and left out.
A file with two video streams to restore is refused by name. An odd width or height, which 4:2:0
and 4:2:2 cannot hold, is encoded 4:4:4 with a line saying so. Frames lost to damage are a
failure with the counts, whatever the container declares (lost_frames); frames FFmpeg concealed
are said in a line; fewer packets in the written file than frames restored is a failure too, and
the partial output is removed. Decoding, restoring and encoding overlap (runtime.stream) and every
queue is bounded, so memory does not grow with length.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
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
DEFAULT_CODEC = "libx264"  # H.264: plays everywhere; the codec of inputs no encoder here follows
# By default the output keeps the input's codec family (it plays where the input played: an HDR10
# HEVC clip on a TV, AV1 in a browser), with the first of these encoders the bundled FFmpeg has.
FOLLOW_INPUT = {"hevc": ("libx265",), "av1": ("libsvtav1", "libaom-av1"),
                "vp9": ("libvpx-vp9",), "vp8": ("libvpx",), "h264": ("libx264",)}
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
    codec: str | None = None  # None: the input's codec family (FOLLOW_INPUT), else DEFAULT_CODEC
    crf: int | None = DEFAULT_CRF
    preset: str | None = None
    pix_fmt: str | None = None  # default: yuv420p, or yuv420p10le for deeper sources
    options: dict = field(default_factory=dict)  # more encoder options, FFmpeg's names
    verbose: bool = False  # the encoders' own logs (x265's, SVT-AV1's) on the terminal

    def encoder_options(self) -> dict:
        opts = dict(self.options)
        if self.crf is not None:  # NVENC's constant-quality knob is `cq`; x264, x265, SVT-AV1: crf
            opts.setdefault("cq" if "nvenc" in (self.codec or "") else "crf", str(self.crf))
        if self.preset:
            opts.setdefault("preset", self.preset)
        return opts


@dataclass
class VideoReport:
    frames: int
    copied_streams: int
    notes: list[str] = field(default_factory=list)  # what was done that the user should know
    decode_error: str | None = None  # FFmpeg's last message on a damaged packet
    undecodable: int = 0  # video packets FFmpeg could not decode (their frames are lost)
    packets: int = 0  # video packets read that carry data
    discarded: int = 0  # of them, those an edit list hides (counted in a declared frame count)


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
    expected_frames: int  # from the video stream's duration x frame rate; 0 where unknown
    codec: str = ""  # FFmpeg's name of the input's video codec (h264, hevc, av1, ...)
    pix_fmt: str = ""  # the input's pixel format (yuv420p10le, yuv422p, ...)


def _av():
    """PyAV, with FFmpeg's log left as PyAV sets it by default: dropped in C. A Python log callback
    (PyAV's set_level) runs on FFmpeg's codec threads and takes the GIL there, which deadlocks
    when the main thread frees a threaded codec while holding it (PyAV issues 751 and 2276; seen
    here restoring an AVI). Failures quote PyAV's exception, which names FFmpeg's error code."""
    return require("av", "restoring videos")


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
    if options.pix_fmt:
        try:
            av.video.format.VideoFormat(options.pix_fmt)
        except (ValueError, av.error.FFmpegError) as exc:
            raise HinetDeployError(f"--pix-fmt {options.pix_fmt} is not a pixel format FFmpeg "
                                   f"knows ({exc})") from exc
    if options.codec is None:  # chosen per input (follow_input), from encoders that exist
        low, high = CRF_RANGE[DEFAULT_CODEC]
        widest = max(CRF_RANGE[e][1] for family in FOLLOW_INPUT.values() for e in family)
        if options.crf is not None and not 0 <= options.crf <= widest:
            raise HinetDeployError(f"--crf {options.crf} is outside {DEFAULT_CODEC}'s range "
                                   f"{low}-{high} (and the range of every encoder the output "
                                   f"may follow: at most {widest})")
        return
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
    # Opening a file runs FFmpeg's stream probing, which decodes frames (an 8K H.264 clip: 113 MB
    # against 42 MB; a 16K one: 927 MB for a refusal): the size comes first from an opening whose
    # decoders skip every frame.
    with av.open(str(src), options={"skip_frame": "all"}) as container:
        video = main_video(container, src)
        check_pixels(video.codec_context.width, video.codec_context.height,
                     f"the video {src}", max_pixels)
    with av.open(str(src)) as container:
        video = main_video(container, src)
        deep = _is_deep(video.codec_context.format)
        frame = next(container.decode(video), None)
        if frame is None:
            raise HinetDeployError(f"{src}: no frame of its video stream could be decoded")
        check_pixels(frame.width, frame.height, f"the video {src}", max_pixels)
        matrix = _side_data(frame, "DISPLAYMATRIX")
        return VideoFacts(
            frame.width, frame.height, deep, int(frame.colorspace), int(frame.color_primaries),
            int(frame.color_trc), int(frame.color_range),
            struct.unpack("9i", matrix) if matrix is not None else None,
            _side_data(frame, "MASTERING_DISPLAY_METADATA"),
            _side_data(frame, "CONTENT_LIGHT_LEVEL"), int(video.frames or 0),
            _frames_by_duration(container, video), video.codec_context.codec.canonical_name,
            frame.format.name)


def _is_deep(fmt) -> bool:
    """More than 8 bits per sample (PyAV's VideoFormat; None: not known)."""
    return fmt is not None and max((c.bits for c in fmt.components), default=8) > 8


def _frames_by_duration(container, video) -> int:
    """Frames the video should hold by its duration x average frame rate: the stream's own
    duration, else the Matroska DURATION tag FFmpeg's muxer writes per stream, else the
    container's where the video is its only stream (audio may run longer); 0 where unknown."""
    rate = video.average_rate or video.guessed_rate
    if not rate:
        return 0
    seconds = None
    if video.duration and video.time_base:
        seconds = float(video.duration * video.time_base)
    elif "DURATION" in video.metadata:
        try:
            h, m, sec = video.metadata["DURATION"].split(":")
            seconds = int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            seconds = None
    elif container.duration and len(container.streams) == 1:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    return round(seconds * float(rate)) if seconds and seconds > 0 else 0


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
        if packet.size:
            counts["packets"] += 1
            if packet.is_discard:  # before an MP4 edit list's start: decoded, never shown
                counts["discarded"] += 1
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as exc:  # a damaged packet: its frame is lost
            counts["errors"] += 1
            counts["last_error"] = str(exc)
            continue
        for frame in frames:
            if frame.is_corrupt:  # decoded with errors FFmpeg concealed
                counts["concealed"] += 1
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


# Ways a stream the output container does not take as it was muxed can still be copied, tried in
# order on its first packets (as FFmpeg's CLI users do with -tag and -bsf): ADTS-framed AAC (no
# extradata; what cameras write into AVI) needs WAVE_FORMAT_MPEG_HEAAC (0x1610) in AVI since FFmpeg
# refuses it under 0x00ff; a codec tag of another container's family is dropped so that the muxer
# picks its own. Length-prefixed and Annex B H.264/HEVC, and ADTS into MP4/Matroska, are converted
# by FFmpeg's muxers themselves (their automatic bitstream filters).
TAG_ADTS_AVI = "\x10\x16\x00\x00"
TAG_MUXER_CHOOSES = "\x00\x00\x00\x00"
TRIAL_PACKETS = 8


def _remedies(stream) -> list[tuple[str | None, str]]:
    """(codec tag to set, what it means) to try, the first keeping the stream as it is."""
    cc = stream.codec_context
    tries = [(None, "")]
    if cc is not None and cc.name == "aac" and not cc.extradata:
        tries.append((TAG_ADTS_AVI, "ADTS AAC tagged 0x1610, as the container needs for it"))
    tries.append((TAG_MUXER_CHOOSES, "its codec tag replaced by the container's own"))
    return tries


def _muxes(container_format: str, write: Callable) -> bool:
    """Whether write(container) succeeds on a throwaway container of this format in memory,
    closed at the end (where the header and the interleaved packets are written), so that the real
    output never fails half-way on what it cannot hold."""
    import io

    av = _av()
    trial = av.open(io.BytesIO(), "w", format=container_format)
    try:
        write(trial)
        trial.close()
        return True
    except (av.error.FFmpegError, ValueError, TypeError, AttributeError):
        return False
    finally:
        with contextlib.suppress(Exception):
            trial.close()


def _mux_trial(av, src: Path, container_format: str, index: int, tag: str | None) -> bool:
    """Whether the stream's first packets go into a container of this format with this tag."""
    with av.open(str(src)) as source:
        stream = source.streams[index]

        def write(trial):
            copy = trial.add_stream_from_template(stream)
            if tag is not None:
                copy.codec_tag = tag
            packets = (p for p in source.demux(stream) if p.dts is not None)
            for packet in itertools.islice(packets, TRIAL_PACKETS):
                packet.stream = copy
                trial.mux(packet)

        return _muxes(container_format, write)


def _copy_streams_into(output, streams, notes: list[str], src: Path) -> dict:
    """Output streams taking the given input streams' packets unchanged, with their metadata
    (language, title), by input stream index. A stream the container does not take as it was
    muxed is tried with each remedy (_remedies), said in a line when one is used; a stream none
    keeps is named and left out: it never fails the video."""
    av = _av()
    copies = {}
    suffix = Path(output.name).suffix
    for s in streams:
        codec = s.codec_context.name if s.codec_context is not None else None
        chosen = next(((tag, said) for tag, said in _remedies(s)
                       if _mux_trial(av, src, output.format.name, s.index, tag)), None)
        if chosen is None:
            notes.append(f"{s.type} stream {s.index} ({codec}) cannot go into a {suffix} file: "
                         f"left out")
            continue
        copies[s.index] = output.add_stream_from_template(s)
        if chosen[0] is not None:
            copies[s.index].codec_tag = chosen[0]
            notes.append(f"{s.type} stream {s.index} ({codec}) copied with {chosen[1]}")
        copies[s.index].metadata.update(s.metadata)
    return copies


def _pixel_format(options: VideoOptions, facts: VideoFacts, notes: list[str]) -> str:
    pix_fmt = options.pix_fmt or _input_pix_fmt(facts, options.codec) or \
        ("yuv420p10le" if facts.deep else "yuv420p")
    odd = facts.width % 2 or facts.height % 2
    if odd and pix_fmt.startswith(SUBSAMPLED):
        full = ("yuv444p10le" if "10" in pix_fmt else "yuv444p")
        notes.append(f"{facts.width}x{facts.height} is odd, which {pix_fmt} cannot hold: encoded "
                     f"{full} (the full size, every pixel)")
        return full
    return pix_fmt


def _container_takes(container_format: str, codec: str, listed) -> bool:
    """Whether a container of this format holds what this encoder makes. FFmpeg lists the codecs of
    muxers that keep a table of them (MP4, Matroska, AVI); others (MPEG-TS) say "unknown", so a
    frame is encoded and muxed into a throwaway container in memory to find out."""
    if codec in listed:
        return True
    av = _av()

    def write(trial):
        stream = trial.add_stream(codec, rate=24)
        stream.width, stream.height = 64, 64
        stream.pix_fmt = (stream.codec_context.codec.video_formats or [None])[0].name
        frame = av.VideoFrame(64, 64, stream.pix_fmt)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        trial.mux(stream.encode(frame))
        trial.mux(stream.encode(None))

    return _muxes(container_format, write)


def _encoder_exists(name: str) -> bool:
    try:
        return _av().codec.Codec(name, "w").type == "video"
    except Exception:  # PyAV's UnknownCodecError and kin
        return False


def _input_pix_fmt(facts: VideoFacts, encoder: str) -> str | None:
    """The input's chroma and depth in a format the encoder takes (yuv422p10le for a 10-bit 4:2:2
    source), or None where it takes none of them (then the default: 4:2:0 at 8 or 10 bits)."""
    name = facts.pix_fmt
    chroma = next((c for c in ("444", "422", "420") if f"yuv{c}" in name or f"yuvj{c}" in name),
                  "420")
    depth = "12le" if "12" in name else "10le" if facts.deep else ""
    offered = {f.name for f in (_av().codec.Codec(encoder, "w").video_formats or [])}
    wanted = [f"yuv{chroma}p{depth}", f"yuv{chroma}p10le" if facts.deep else f"yuv{chroma}p"]
    return next((f for f in wanted if f in offered), None)


def follow_input(options: VideoOptions, facts: VideoFacts, notes: list[str]) -> VideoOptions:
    """The options with the codec chosen where the user chose none: the input's codec family where
    an encoder for it exists here (its depth and chroma: _pixel_format, once the container has
    had its say on the encoder)."""
    import dataclasses

    codec = options.codec
    if codec is None:
        family = FOLLOW_INPUT.get(facts.codec, ())
        codec = next((e for e in family if _encoder_exists(e)), DEFAULT_CODEC)
        if family and codec not in family:
            notes.append(f"no {facts.codec} encoder here: encoded with {codec} (--codec chooses)")
    low, high = CRF_RANGE.get(codec, (None, None))
    if options.crf is not None and low is not None and not low <= options.crf <= high:
        raise HinetDeployError(f"--crf {options.crf} is outside {codec}'s range {low}-{high} "
                               f"({codec} follows the input's {facts.codec}; --codec chooses)")
    return dataclasses.replace(options, codec=codec)


def _codec_for(output, options: VideoOptions, notes: list[str]) -> VideoOptions:
    """The options with an encoder the output container holds: the container's own default where
    the one asked for cannot go into it (H.264 into WebM), said in a line."""
    if _container_takes(output.format.name, options.codec, output.supported_codecs):
        return options
    chosen = output.default_video_codec
    notes.append(f"{options.codec} cannot go into a {Path(output.name).suffix} file: encoded "
                 f"with {chosen} (--codec chooses another it holds)")
    crf = options.crf if chosen not in CRF_RANGE or options.crf is None else \
        min(max(options.crf, CRF_RANGE[chosen][0]), CRF_RANGE[chosen][1])
    return VideoOptions(chosen, crf, None, options.pix_fmt, dict(options.options),
                        options.verbose)


def _encoder_options(options: VideoOptions, facts: VideoFacts, notes: list[str]) -> dict:
    """The encoder's options, with HDR10's metadata where the encoder carries it."""
    opts = options.encoder_options()
    hdr = x265_hdr_params(facts.mastering, facts.light_level)
    x265 = [opts["x265-params"]] if opts.get("x265-params") else []
    if not options.verbose and options.codec == "libx265" and "log-level" not in "".join(x265):
        x265.append("log-level=error")  # x265 prints ~25 [info] lines to stderr itself
    if hdr is not None and options.codec == "libx265":
        x265.append(hdr)
    if x265 and options.codec == "libx265":
        opts["x265-params"] = ":".join(x265)
    if not options.verbose and options.codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1's own [info] lines: errors only
    if hdr is not None and options.codec != "libx265":
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
        chosen: list[str] = []
        options = follow_input(options, facts, chosen)
        with atomic_path(dst, suffix=f".partial{dst.suffix}") as tmp:
            report = _transcode(av, source, video, tmp, restore, options, facts, on_frame, span)
            report.notes[:0] = chosen
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


# Frames a duration x rate estimate may be off by without loss: the duration's rounding, and
# variable frame rates, whose average makes the estimate approximate.
DURATION_SLACK_FRAMES = 1
DURATION_SLACK_SHARE = 0.01


def lost_frames(report: VideoReport, facts: VideoFacts) -> str | None:
    """Why frames are missing, with the counts, from every sign the input gives: the container's
    declared count (MP4, AVI), video packets that could not be decoded, and the video stream's
    duration x frame rate (Matroska/WebM, MPEG-TS and others that declare no count); None where
    nothing says a frame was lost."""
    why = f" (FFmpeg: {report.decode_error})" if report.decode_error else ""
    shown = facts.declared_frames - report.discarded
    if facts.declared_frames and report.frames < shown:
        return (f"{report.frames} of {shown} declared frames decoded{why}: the file is damaged or "
                f"cut short")
    if report.undecodable:
        return (f"{report.undecodable} of {report.packets} video packets could not be decoded"
                f"{why}: {report.frames} frames decoded; the file is damaged")
    expected = facts.expected_frames
    slack = max(DURATION_SLACK_FRAMES, round(expected * DURATION_SLACK_SHARE))
    if expected and report.frames < expected - slack:
        return (f"{report.frames} frames decoded where its duration at its frame rate holds about "
                f"{expected}: the file is damaged or cut short")
    return None


def _check_written(av, src: Path, path: Path, report: VideoReport, facts: VideoFacts, span):
    """Every frame the input holds decoded, every restored frame in the written file."""
    lost = lost_frames(report, facts) if span is None else None
    if lost is not None:
        raise HinetDeployError(f"{src}: {lost}")
    packets = frame_count(path)
    if packets != report.frames:
        raise HinetDeployError(f"{path.name} holds {packets} video frames of the {report.frames} "
                               f"restored from {src}: not written whole")


@dataclass(frozen=True)
class RgbConversion:
    """Frames to RGB and back with the video's own matrix and range (not swscale's BT.601
    default), at 16 bits for deeper sources."""

    rgb: str  # rgb24 or rgb48le
    matrix: int | None  # swscale's colorspace; None: its default
    color_range: int | None  # None (unspecified): swscale's limited-range default

    @classmethod
    def of(cls, deep: bool, colorspace: int, color_range: int) -> "RgbConversion":
        return cls("rgb48le" if deep else "rgb24", SWSCALE_MATRIX.get(colorspace),
                   color_range or None)

    def to_rgb(self, frame) -> np.ndarray:
        return frame.to_ndarray(format=self.rgb, src_colorspace=self.matrix,
                                src_color_range=self.color_range)

    def from_rgb(self, av, pixels: np.ndarray, pix_fmt: str):
        return av.VideoFrame.from_ndarray(pixels, format=self.rgb).reformat(
            format=pix_fmt, dst_colorspace=self.matrix, dst_color_range=self.color_range)


def _transcode(av, source, video, path: Path, restore, options: VideoOptions, facts: VideoFacts,
               on_frame, span=None) -> VideoReport:
    conversion = RgbConversion.of(facts.deep, facts.colorspace, facts.color_range)
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
        # The encoder counts time in the input stream's units too: its default (1 / frame rate)
        # rounded times off that grid (MPEG-TS at 1.4833 s became 1.5 s).
        encoder.codec_context.time_base = video.time_base
        encoder.metadata.update(video.metadata)
        _tag_encoder(encoder, facts)
        copied = [] if span else _copied_streams(source, video)
        copies = _copy_streams_into(output, copied, notes, Path(source.name))
        step = max(1, round(1 / (rate * video.time_base))) if rate and video.time_base else 1
        counts = {"errors": 0, "last_error": None, "packets": 0, "concealed": 0, "discarded": 0}
        frames = 0

        def restore_event(event):
            if event[0] == "frame":
                _, frame, pts = event
                return "frame", restore(conversion.to_rgb(frame)), pts
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
            frame = conversion.from_rgb(av, pixels, encoder.pix_fmt)
            frame.pts, frame.time_base = pts, video.time_base
            output.mux(encoder.encode(frame))
            frames += 1
            if on_frame is not None:
                on_frame()
        output.mux(encoder.encode(None))
    finally:
        output.close()
    if counts["concealed"]:
        notes.append(f"{counts['concealed']} of {frames} frames were damaged in the input and "
                     f"decoded with FFmpeg's error concealment: check them")
    return VideoReport(frames, len(copies), notes, counts["last_error"], counts["errors"],
                       counts["packets"], counts["discarded"])


def restore_frames(restore: Callable[[np.ndarray], np.ndarray], frames,
                   depth: int | None = None):
    """PyAV video frames in (a decoder's, a camera's), restored PyAV frames out, in order, with
    what the pixels travel with kept: each frame's presentation time and time base, pixel format,
    and colour signalling (range, matrix, primaries, transfer). The frames go to RGB and back with
    their own matrix and range, not PyAV's default (BT.601), as `restore` does for files.

        with Restorer("gopro.onnx") as restorer, av.open("in.mp4") as source:
            for frame in restore_frames(restorer, source.decode(video=0)):
                output.mux(encoder.encode(frame))

    Decoding, restoring and the caller's encoding overlap (runtime.stream), `depth` frames at most
    waiting in each stage."""
    from hinet_deploy.runtime.stream import DEFAULT_DEPTH

    av = _av()

    def one(frame):
        conversion = RgbConversion.of(_is_deep(frame.format), int(frame.colorspace),
                                      int(frame.color_range))
        out = conversion.from_rgb(av, restore(conversion.to_rgb(frame)), frame.format.name)
        out.pts, out.time_base = frame.pts, frame.time_base
        out.colorspace, out.color_range = frame.colorspace, frame.color_range
        out.color_primaries, out.color_trc = frame.color_primaries, frame.color_trc
        return out

    return pipelined(one, frames, DEFAULT_DEPTH if depth is None else depth)


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
                                        [], src)
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
