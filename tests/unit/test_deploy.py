"""deploy/ checked against the code, where no Docker engine or cluster runs.

The Kubernetes overlays are rendered with kustomize (kubectl's); compose, Prometheus and
Grafana files are parsed. Every worker command is parsed by recstream's own CLI parser,
every setting is one the code reads, every probe is an endpoint a worker serves, every
dashboard metric one a worker exports, and topics, partitions and KEDA's bounds agree with
what the workers create.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from streams.cli import build_parser
from streams.metrics import Metrics
from streams.settings import Settings, TopicSettings
from streams.stages.app import STAGES
from streams.topics import topic_specs

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROBES = {"/healthz", "/readyz"}
METRICS_PATH = "/metrics"


def _setting_names(model: type[BaseModel] = Settings, prefix: str = "RECSTREAM_") -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _setting_names(annotation, f"{prefix}{name.upper()}__")
        names.add(f"{prefix}{name.upper()}")
    return names


SETTINGS = _setting_names()


def _check_env(env: dict[str, str], where: str) -> Settings:
    """Every RECSTREAM_ variable names a setting, and together they validate."""
    unknown = {k for k in env if k.startswith("RECSTREAM_") and k not in SETTINGS}
    assert not unknown, f"{where}: settings the code does not read: {sorted(unknown)}"
    nested: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith("RECSTREAM_"):
            *path, leaf = key.removeprefix("RECSTREAM_").lower().split("__")
            node = nested
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
    return Settings(**nested)


def _worker_args(args: list[str], where: str) -> Any:
    """The container's arguments as recstream's CLI parses them: a worker with known stages."""
    parsed = build_parser().parse_args([a.replace("$(POD_NAME)", "pod-0").replace("$(POD_IP)", "10.0.0.1") for a in args])
    assert parsed.command == "worker", where
    assert set(parsed.stages.split(",")) <= set(STAGES), where
    assert parsed.metrics_port, f"{where}: no --metrics-port, so no probes and no metrics"
    return parsed


# --------------------------------------------------------------------------- Kubernetes


def _render(overlay: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_kubernetes_overlay_matches_the_code(overlay: str) -> None:
    docs = _render(overlay)
    config = _one(docs, "ConfigMap", "recstream")["data"]
    workloads = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    assert {w["metadata"]["name"] for w in workloads} == {"recstream-recommend", "recstream-encode"}
    settings = _check_env(config, "ConfigMap recstream")
    stages_seen: set[str] = set()
    for workload in workloads:
        where = f"{workload['kind']} {workload['metadata']['name']}"
        pod = workload["spec"]["template"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, where
        labels = pod["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), where
        [container] = pod["spec"]["containers"]
        args = _worker_args(container["args"], where)
        stages_seen |= set(args.stages.split(","))
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        assert {ref["configMapRef"]["name"] for ref in container["envFrom"]} == {"recstream"}, where
        _check_env({**config, **env}, where)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == args.metrics_port, where
        paths = {container[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}
        assert paths == PROBES, where
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"], where
        gpu = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        if "encode" in args.stages:
            assert (gpu is None) == (overlay == "dev"), f"{where}: GPU request in {overlay}"
        else:
            assert gpu is None, where
        # PodDisruptionBudget per workload, selecting its pods
        pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"
                and d["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(pdbs) == 1, where
    assert stages_seen == set(STAGES)

    recommend = _one(docs, "StatefulSet", "recstream-recommend")
    [claim] = recommend["spec"]["volumeClaimTemplates"]
    [container] = recommend["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(settings.data_dir), "the state volume is the data dir"

    # Kafka: the bootstrap the workers use is the Strimzi cluster's, topics as the code makes them
    kafka = _one(docs, "Kafka")
    [listener] = kafka["spec"]["kafka"]["listeners"]
    assert settings.kafka.bootstrap_servers == f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    topics = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    specs = {spec.name: spec for spec in topic_specs(settings.topics)}
    assert topics.keys() == specs.keys()
    for name, spec in specs.items():
        assert topics[name]["partitions"] == spec.num_partitions, name
        assert topics[name]["replicas"] == spec.replication_factor, name
        assert topics[name].get("config", {}) == spec.topic_configs, name
    brokers = _one(docs, "KafkaNodePool")["spec"]["replicas"]
    assert settings.topics.replication_factor <= brokers

    # KEDA: lag of the workers' own group on clicks, never more workers than partitions
    scaled = _one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                "name": "recstream-recommend"}
    assert scaled["spec"]["maxReplicaCount"] == settings.topics.partitions
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.app_id  # faust's group id is the app id
    assert trigger["metadata"]["topic"] == settings.topics.clicks
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka.bootstrap_servers

    # The sequence model: a nightly job trains it from the topics onto a shared volume that
    # every recommend worker mounts, read-only, where its settings say models are published
    job = _one(docs, "CronJob", "recstream-train")
    pod = job["spec"]["jobTemplate"]["spec"]["template"]
    [trainer] = pod["spec"]["containers"]
    parsed = build_parser().parse_args(trainer["args"])
    assert parsed.command == "train" and parsed.from_topics
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert {ref["configMapRef"]["name"] for ref in trainer["envFrom"]} == {"recstream"}
    claim = _one(docs, "PersistentVolumeClaim", "recstream-models")
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "the job and the workers run on different nodes"

    def models_mount(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
        [volume] = [v for v in pod_spec["volumes"]
                    if v.get("persistentVolumeClaim", {}).get("claimName") == "recstream-models"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        return mount

    published = models_mount(pod["spec"], trainer)
    served = models_mount(recommend["spec"]["template"]["spec"], container)
    assert not published.get("readOnly") and served.get("readOnly")
    assert settings.sequence_dir.is_relative_to(served["mountPath"])
    assert settings.sequence_dir.is_relative_to(published["mountPath"])
    assert Path(parsed.plot).is_relative_to(published["mountPath"])

    monitor = _one(docs, "PodMonitor")
    assert [e["path"] for e in monitor["spec"]["podMetricsEndpoints"]] == [METRICS_PATH]
    for workload in workloads:
        assert monitor["spec"]["selector"]["matchLabels"].items() <= \
            workload["spec"]["template"]["metadata"]["labels"].items()


# --------------------------------------------------------------------------- compose


def _compose(*files: str) -> dict[str, Any]:
    """The compose files merged and validated by docker-compose (``config``: no engine needed;
    Debian's package, which .ci/run installs), or parsed as YAML where it is missing."""
    files = files or ("compose.yaml",)
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("CI validates deploy/compose.yaml with docker-compose, but it is missing")
        merged: dict[str, Any] = yaml.safe_load((DEPLOY / files[0]).read_text())
        for extra in files[1:]:  # enough for the GPU override: one service, new keys
            for name, service in yaml.safe_load((DEPLOY / extra).read_text())["services"].items():
                merged["services"][name] = {**merged["services"][name], **service}
        return merged
    out = subprocess.run(["docker-compose", *[a for f in files for a in ("-f", str(DEPLOY / f))], "config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"docker-compose rejects {files}: {out.stderr}"
    return yaml.safe_load(out.stdout)


def test_compose_runs_the_workers_the_code_knows() -> None:
    services = _compose()["services"]
    workers = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("recstream-")}
    assert {"encode", "recommend-0", "recommend-1"} <= workers.keys()
    ports = {}
    for name, service in workers.items():
        args = _worker_args(service["command"], name)
        settings = _check_env({k: str(v) for k, v in service["environment"].items()}, name)
        assert settings.kafka.bootstrap_servers.split(":")[0] in services, f"{name}: no such broker service"
        assert any(PROBES & set(re.findall(r"/\w+", " ".join(service["healthcheck"]["test"])))
                   for _ in [0]), name
        ports[name] = args.metrics_port
    recommenders = [n for n, s in workers.items() if "recommend" in _worker_args(s["command"], n).stages]
    assert len(recommenders) == 2, "two recommend workers share the click partitions"
    names = {_worker_args(workers[n]["command"], n).name for n in recommenders}
    assert len(names) == 2, "each recommend worker has its own name (its own state dir)"

    scraped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in scraped["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert {f"{name}:{port}" for name, port in ports.items()} <= targets, "Prometheus scrapes every worker"
    assert {t.split(":")[0] for t in targets} <= services.keys()

    gpu = _compose("compose.yaml", "compose.gpu.yaml")["services"]
    encoders = {n for n in workers if "encode" in _worker_args(workers[n]["command"], n).stages}
    reserved = {n for n, s in gpu.items() if s.get("deploy", {}).get("resources", {}).get("reservations")}
    assert reserved == encoders, "with the GPU override, exactly the encode workers reserve a GPU"
    [device] = gpu["encode"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    _check_env({k: str(v) for k, v in gpu["encode"]["environment"].items()}, "encode (GPU)")


def test_the_dashboard_reads_metrics_the_workers_export() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "recstream.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(recstream_\w+|kafka_\w+)", e)}
    Metrics.get()  # registers the workers' metrics
    from prometheus_client import REGISTRY

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes.get(family.type, ("",))}
    ours = {m for m in used if m.startswith("recstream_")}
    assert ours <= exported, f"not exported by any worker: {sorted(ours - exported)}"
    assert {m for m in used if m.startswith("kafka_")} <= {"kafka_consumergroup_lag"}  # kafka-exporter's
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for needed in ("clicks", "lag", "recommendation", "freshness", "dead letters", "index size"):
        assert needed in titles, needed


# --------------------------------------------------------------------------- images


def _dockerfile(name: str) -> str:
    return (DEPLOY / name).read_text()


def test_the_training_image_trains_from_the_topics_as_non_root() -> None:
    text = _dockerfile("Dockerfile.train")
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["recstream"\]', text, re.M)
    [cmd] = re.findall(r"^CMD (\[.*\])", text, re.M)
    parsed = build_parser().parse_args(json.loads(cmd))
    assert parsed.command == "train" and parsed.from_topics
    assert "[export" in text and "recstream export --out /model" in text and "RECSTREAM_MODEL__DIR=/model" in text


@pytest.mark.parametrize("name", ["Dockerfile.serve", "Dockerfile.encode"])
def test_images_run_a_worker_as_non_root(name: str) -> None:
    text = _dockerfile(name)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the final stage runs as a non-root user"
    assert re.search(r'^ENTRYPOINT \["recstream"\]', text, re.M)
    [cmd] = re.findall(r"^CMD (\[.*\])", text, re.M)
    _worker_args(json.loads(cmd), name)
    assert "/healthz" in text


def test_the_serving_stages_need_no_torch_and_onnxruntime_only_for_a_sequence_model() -> None:
    """Dockerfile.serve swaps onnxruntime-gpu for the CPU build (the sequence model runs on
    it) and has no torch: index + recommend start without importing either."""
    serve = _dockerfile("Dockerfile.serve")
    assert "pip uninstall -y onnxruntime-gpu" in serve and 'pip install "onnxruntime>=' in serve
    assert "torch" not in re.sub(r"#.*", "", serve)
    code = """
import sys, importlib.abc, tempfile
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('onnxruntime', 'torch', 'transformers'):
            raise ImportError('blocked in the serving image: ' + name)
sys.meta_path.insert(0, Block())
from streams.settings import Settings
from streams.stages.app import build_app
from streams.cli import build_parser
build_parser().parse_args(['worker', '--stages', 'index,recommend'])
build_app(Settings(data_dir=tempfile.mkdtemp()), stages=['index', 'recommend'])
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_topic_names_in_deploy_are_the_defaults() -> None:
    """Neither compose nor the ConfigMap renames topics: the KafkaTopics name the defaults."""
    defaults = set(TopicSettings().all_names())
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "base" / "topics.yaml").read_text())
    assert {d["metadata"]["name"] for d in docs if d} == defaults
