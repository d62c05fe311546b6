"""`python -m hinet_deploy.engines.build_child REQUEST RESULT`: build_engine in a process of its own.

For builds that need an environment set at process start (engines.plugin.rtx_parser). REQUEST is a
pickle written by engines.build (trusted: this project wrote it a moment ago, in a private temporary
folder); RESULT gets {"sidecar": ...} or {"error": message}.
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError


def main(request_path: str, result_path: str) -> int:
    from hinet_deploy.engines.build import build_engine
    from hinet_deploy.engines.plugin.support import register_plugin
    from hinet_deploy.engines.tensorrt_module import import_tensorrt

    request = pickle.loads(Path(request_path).read_bytes())
    try:
        trt_module = import_tensorrt(request["tensorrt"])
        if request["plugin"]:
            register_plugin(trt_module)
        sidecar = build_engine(trt_module, request["graph"], request["engine"], request["options"],
                               request["sidecar"], request["verbose"])
        result = {"sidecar": sidecar}
    except HinetDeployError as exc:
        result = {"error": str(exc)}
    Path(result_path).write_bytes(pickle.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
