"""The facts an exported graph carries about its model (config, size multiple, checkpoint hash, ...)
under `hinet.*` keys of its metadata_props: written here, read here, by every stage.

Imports neither onnx nor torch at module level, so the runtime can read the facts from an ONNX
Runtime session's metadata without them.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import input_file, not_regular
from hinet_deploy.common.limits import HINET_SIZE_MULTIPLE, SizeLimits
from hinet_deploy.common.untrusted import confined

PREFIX = "hinet."
# The tensor names of every exported graph, its engines and sidecars: one image in, the restored
# image out (and the stage-1 image with --both-stages).
INPUT_NAME = "input"
OUTPUT_NAME = "output"
STAGE1_OUTPUT_NAME = "output_stage1"


def write_metadata(model, facts: Mapping[str, str]) -> None:
    """Adds (or replaces) the facts on an onnx.ModelProto."""
    keep = [p for p in model.metadata_props if p.key[len(PREFIX):] not in facts
            or not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in facts.items():
        model.metadata_props.add(key=PREFIX + key, value=str(value))


def graph_limits(meta: Mapping[str, str], dims) -> SizeLimits:
    """What a graph takes, from its facts and its input's dimensions (None where dynamic): every
    backend that runs the .onnx reads the same."""
    try:
        width = int(json.loads(meta["config"])["wf"])
    except (KeyError, ValueError, TypeError):
        width = None
    return SizeLimits(multiple=int(meta.get("size_multiple", HINET_SIZE_MULTIPLE)),
                      fixed_batch=dims[0], fixed_hw=(dims[2], dims[3]) if dims[2] and dims[3]
                      else None, width_factor=width)


def from_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """The facts among key/value properties (ONNX Runtime's custom_metadata_map), unprefixed."""
    return {k[len(PREFIX):]: v for k, v in properties.items() if k.startswith(PREFIX)}


def read_metadata(model) -> dict[str, str]:
    """The facts of an onnx.ModelProto."""
    return from_properties({p.key: p.value for p in model.metadata_props})


def check_external_files(model, path: Path) -> list:
    """The graph's tensors stored in external files, each file checked before anything reads it:
    confined to the graph's folder, a regular file (a FIFO there would block the reader forever)."""
    from onnx.external_data_helper import uses_external_data

    external = [t for t in model.graph.initializer if uses_external_data(t)]
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        data = confined(path.parent, location, f"the graph {path.name} (external data of "
                                               f"{tensor.name})")
        problem = not_regular(data)
        if problem == "does not exist":
            raise HinetDeployError(f"{path}: the external data file {location} of {tensor.name} "
                                   f"is missing beside the graph")
        if problem is not None:
            raise HinetDeployError(f"{path}: the external data file {location} of {tensor.name} "
                                   f"{problem}")
    return external


def load_graph(path: Path, load_external_data: bool = True):
    """The onnx.ModelProto in a file, with one clear error when it is not a readable graph."""
    import onnx
    from google.protobuf.message import DecodeError

    from onnx.external_data_helper import load_external_data_for_model

    path = input_file(path, "ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise HinetDeployError(f"{path} is not a readable ONNX graph ({exc})") from exc
    if not model.graph.node:  # protobuf parses many foreign files as an empty message
        raise HinetDeployError(f"{path} is not a readable ONNX graph (it holds no nodes)")
    external = check_external_files(model, path)
    if external and load_external_data:
        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise HinetDeployError(f"{path}: its external data cannot be read ({exc})") from exc
    return model


def read_graph_metadata(path: Path) -> dict[str, str]:
    """The facts of an ONNX file, with one clear error when it is not a readable graph."""
    return read_metadata(load_graph(path, load_external_data=False))
