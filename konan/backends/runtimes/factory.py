"""Turn settings into a Runtime; only composition roots (server, worker, CLI) call this."""

from __future__ import annotations

from konan.backends.runtimes.base import Runtime
from konan.backends.runtimes.local import LocalProcessRuntime
from konan.core.errors import ConfigError
from konan.core.settings import Settings


def runtime_from_settings(settings: Settings) -> Runtime:
    """The adapter named by ``KONAN_RUNTIME__KIND``.

    * ``local`` → LocalProcessRuntime(settings.serving_root, settings.runtime.local_host); the
      processes run under the agent (``konan agent``, started by ``konan up``)
    * ``docker`` → DockerRuntime (the docker SDK is imported only now)
    * ``kubernetes`` → KubernetesRuntime (the kubernetes client is imported only when used)
    """
    kind = settings.runtime.kind
    if kind == "local":
        return LocalProcessRuntime(settings.serving_root, settings.runtime.local_host)
    if kind == "docker":
        from konan.backends.runtimes.docker import DockerRuntime

        return DockerRuntime(settings)
    if kind == "kubernetes":
        from konan.backends.runtimes.kubernetes import KubernetesRuntime

        return KubernetesRuntime(settings)
    raise ConfigError(f"KONAN_RUNTIME__KIND={kind!r}: use local, docker or kubernetes")
