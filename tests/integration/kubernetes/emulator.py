"""Start the Kubernetes API emulator (tests/k8s_emulator) as a process, and a Deployment
of the demo app in it: what the kubernetes backend's integration tests stand on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests import polling
from tests.k8s_emulator.server import POD_MARK, validate
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[3]
DEMO_APP = REPO / "examples" / "apps" / "demo_app.py"
TOKEN = "emulator-test-token"


@dataclass
class EmulatedCluster:
    url: str
    token_file: Path
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
            trust_env=False,
        )

    def create_deployment(self, name: str, replicas: int, namespace: str = "default") -> None:
        body = demo_deployment(name, replicas, namespace)
        assert validate(body) is None
        with self.client() as client:
            answer = client.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", json=body)
        assert answer.status_code == 201, answer.text

    def get(self, path: str) -> Any:
        with self.client() as client:
            answer = client.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def pods(self, namespace: str = "default", selector: str = "") -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{namespace}/pods"
        if selector:
            path += f"?labelSelector={selector}"
        return list(self.get(path)["items"])

    def replicas(self, name: str, namespace: str = "default") -> int:
        scale = self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale")
        return int(scale["spec"]["replicas"])

    def state(self) -> dict[str, Any]:
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as client:
            return dict(client.get("/_emulator").json())


def demo_deployment(name: str, replicas: int, namespace: str = "default") -> dict[str, Any]:
    """A Deployment of examples/apps/demo_app.py; the emulator runs each pod locally."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "demo-app:local",
                            "command": [sys.executable, str(DEMO_APP)],
                            "args": ["--port", "$(PORT)", "--replica", "$(POD_NAME)"],
                            "env": [
                                {"name": "PORT", "value": "8080"},
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        }
                    ],
                },
            },
        },
    }


@contextlib.contextmanager
def emulated_cluster(tmp: Path) -> Iterator[EmulatedCluster]:
    """The emulator on a free port, bearer token required; killed (with its pods) after."""
    token_file, pids_file = tmp / "token", tmp / "pod-pids"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.k8s_emulator",
            "--port",
            str(port),
            "--token-file",
            str(token_file),
            "--pids-file",
            str(pids_file),
        ],
        cwd=REPO,
        env=os.environ.copy(),
    )
    cluster = EmulatedCluster(f"http://127.0.0.1:{port}", token_file, process)
    try:

        def answers() -> bool:
            try:
                cluster.state()
            except httpx.TransportError:
                assert process.poll() is None, "the emulator exited"
                return False
            return True

        polling.wait_for(answers, 20, "the Kubernetes emulator to answer", every=0.1)
        yield cluster
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        # pods of an emulator that could not stop them (each leads its own session)
        for pid in pids_file.read_text().split() if pids_file.exists() else []:
            with contextlib.suppress(psutil.Error):
                if POD_MARK in psutil.Process(int(pid)).environ():  # not a reused pid
                    psutil.Process(int(pid)).kill()
