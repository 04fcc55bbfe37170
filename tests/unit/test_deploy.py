"""The deployment files under deploy/: they parse, keep their hardening, and the alert rules
and the Grafana dashboard name only metrics the SBC exports (sbc/metrics.py).

External checkers run where installed and are skipped otherwise: systemd-analyze (unit
syntax and exposure), promtool (PromQL of the rules and the dashboard; Debian's
`prometheus` package ships it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sbc.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "sbc.service"
K8S = DEPLOY / "kubernetes"
ALERTS = DEPLOY / "prometheus" / "sbc-alerts.yml"
SCRAPE = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "sbc-dashboard.json"

YAML_FILES = sorted([*K8S.glob("*.yaml"), *(DEPLOY / "prometheus").glob("*.yml")])

# Identifiers the SBC exports (prometheus_client's process collector adds process_*).
METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:$])((?:sbc|process)_[A-Za-z0-9_:]*)")
# PromQL string literals (label values, regexes): never metric names.
STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def _metric_names() -> set[str]:
    if not (ROOT / "sbc" / "metrics.py").exists():
        pytest.skip("sbc/metrics.py does not exist yet: no metric names to check against")
    from sbc.metrics import Metrics

    return Metrics().metric_names()


def _referenced(expr: str) -> set[str]:
    return set(METRIC_RE.findall(STRING_RE.sub('""', expr)))


def _known(name: str, names: set[str]) -> bool:
    """`name` as PromQL selects it. metric_names() lists sample names (counters with
    _total, histograms with _bucket/_sum/_count); should it list family names instead,
    a suffixed reference counts when its family is there."""
    if name in names:
        return True
    if any(n.endswith(SUFFIXES) for n in names):
        return False
    return any(name.endswith(s) and name[: -len(s)] in names for s in SUFFIXES)


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _dashboard_exprs(node: Any) -> list[str]:
    """Every PromQL text in the dashboard: panel targets and template variable queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            elif key == "query" and isinstance(value, str) and "(" in value:
                found.append(value)
            else:
                found.extend(_dashboard_exprs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_dashboard_exprs(item))
    return found


def _k8s_objects() -> dict[str, dict[str, Any]]:
    objects = {}
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def _unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        keys.setdefault(key.strip(), []).append(value.strip())
    return keys


# ------------------------------------------------------------------ every file parses


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} is empty"


def test_deploy_files_exist() -> None:
    for path in (DOCKERFILE, UNIT, ALERTS, SCRAPE, DASHBOARD, ROOT / ".dockerignore"):
        assert path.is_file(), path
    for name in ("deployment", "configmap", "secret", "service", "kustomization"):
        assert (K8S / f"{name}.yaml").is_file(), name


def test_dashboard_parses() -> None:
    dashboard = _dashboard()
    assert dashboard["title"] and dashboard["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(target["expr"] for target in panel["targets"]), panel["title"]


# ------------------------------------------------------------------ Docker


def test_dockerfile() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]
    froms = [arg for op, arg in instructions if op == "FROM"]
    args = dict(
        arg.split("=", 1) for op, arg in instructions if op == "ARG" and "=" in arg
    )  # the base image may come through an ARG
    bases = [args.get(f.split()[0].strip("${}"), f.split()[0]) for f in froms]
    assert bases and all(base.startswith("python:3.11-slim-bookworm") for base in bases), bases
    # The last stage, the image that ships, runs as a non-root user and gets no compilers.
    final = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    last_stage = instructions[final:]
    users = [arg for op, arg in last_stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    installs = " ".join(arg for op, arg in last_stage if op == "RUN")
    assert not re.search(r"build-essential|\bgcc\b|\bcc\b|apt-get install", installs)
    assert any(op == "COPY" and "--from=" in arg for op, arg in last_stage)
    build = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "pip install '.[postgres]'" in build  # CDRs by DSN need psycopg
    assert ("ENTRYPOINT", '["sbc", "run", "-c", "/etc/sbc/sbc.yaml"]') in instructions
    exposed = " ".join(arg for op, arg in instructions if op == "EXPOSE")
    assert "5060/udp" in exposed and "5060/tcp" in exposed
    healthcheck = " ".join(arg for op, arg in instructions if op == "HEALTHCHECK")
    assert "/health" in " ".join(lines) and "CMD" in healthcheck


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()
    }
    assert {".venv", ".git", "tests"} <= ignored
    # ...but not what the Dockerfile copies.
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") not in ignored, source
            assert (ROOT / source).exists(), source


# ------------------------------------------------------------------ systemd


def test_unit_hardening() -> None:
    keys = _unit_keys()
    expected = {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "PrivateTmp": "true",
        "PrivateDevices": "true",
        "ProtectKernelTunables": "true",
        "ProtectKernelModules": "true",
        "ProtectKernelLogs": "true",
        "ProtectControlGroups": "true",
        "RestrictNamespaces": "true",
        "LockPersonality": "true",
        "MemoryDenyWriteExecute": "true",
        "SystemCallArchitectures": "native",
        "StateDirectory": "sbc",
        "ReadWritePaths": "/var/lib/sbc",
        "KillSignal": "SIGTERM",
        "CapabilityBoundingSet": "",
        "User": "sbc",
    }
    for key, value in expected.items():
        assert keys.get(key, [None])[-1] == value, (key, keys.get(key))
    assert keys["RestrictAddressFamilies"][-1].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert keys["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert int(keys["TimeoutStopSec"][-1]) >= 30
    assert int(keys["LimitNOFILE"][-1]) >= 65536
    assert keys["ExecStart"][-1] == "/opt/sbc/.venv/bin/sbc run -c /etc/sbc/sbc.yaml"


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify, syntax only: /opt/sbc is not installed here, so the unit's
    binary is pointed at /bin/true in a copy (the only complaint it would cause). Unknown
    keys and bad values are warnings on stderr with exit 0: any output fails."""
    tool = _systemd_analyze()
    unit = tmp_path / "sbc.service"
    unit.write_text(UNIT.read_text().replace("/opt/sbc/.venv/bin/sbc", "/bin/true"))
    result = subprocess.run(
        [tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_unit_exposure(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    unit = tmp_path / "sbc.service"
    unit.write_text(UNIT.read_text())
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline unsupported here: {result.stderr}")
    assert float(match.group(1)) <= 2.5, result.stdout


# ------------------------------------------------------------------ Kubernetes


def test_kubernetes_deployment() -> None:
    objects = _k8s_objects()
    deployment = objects["Deployment/sbc"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert anti[0]["labelSelector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["terminationGracePeriodSeconds"] >= 30

    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    port_names = {port["name"] for port in container["ports"]}
    assert {"api", "metrics"} <= port_names
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][key].keys()
    for each in [*pod["initContainers"], container]:
        context = each["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]

    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/var/lib/sbc"]] or (
        "persistentVolumeClaim" in volumes[mounts["/var/lib/sbc"]]
    )
    assert volumes[mounts["/etc/sbc-secrets"]]["secret"]["secretName"] == "sbc-secrets"
    assert volumes["config-template"]["configMap"]["name"] == "sbc-config"


def test_kubernetes_service_has_no_sip() -> None:
    service = _k8s_objects()["Service/sbc-metrics"]
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(ports) == {"metrics", "api"}
    assert all(port["protocol"] == "TCP" for port in ports.values())


def test_kubernetes_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_kubernetes_config_is_valid(tmp_path: Path) -> None:
    """The ConfigMap's sbc.yaml, with the node placeholders the init container fills and
    the Secret's files in place, passes the SBC's own validation."""
    objects = _k8s_objects()
    text = objects["ConfigMap/sbc-config"]["data"]["sbc.yaml"]
    text = text.replace("${NODE_IP}", "192.0.2.10").replace("${NODE_NAME}", "sbc-node-a")
    assert "${" not in text
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in objects["Secret/sbc-secrets"]["stringData"].items():
        (secrets / name).write_text(value)
    text = text.replace("/etc/sbc-secrets/", f"{secrets}/")
    config = tmp_path / "sbc.yaml"
    config.write_text(text)
    loaded = load_config(str(config))
    assert loaded.api.listen is not None and loaded.metrics.listen is not None


# ------------------------------------------------------------------ Prometheus and Grafana


def test_alert_rules_cover_the_operations_cases() -> None:
    rules = _alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "SbcTrunkDown",
        "SbcRegistrationFailed",
        "SbcHighAdmissionRejectionRate",
        "SbcLowMos",
        "SbcMediaWorkerRestarts",
        "SbcNoCallsAccepted",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_alert_rules_use_only_exported_metrics() -> None:
    names = _metric_names()
    for rule in _alert_rules():
        referenced = _referenced(rule["expr"])
        unknown = {name for name in referenced if not _known(name, names)}
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} not in sbc/metrics.py"
        if rule["alert"] != "SbcDown":
            assert referenced, f"{rule['alert']} names no SBC metric"


def test_dashboard_uses_only_exported_metrics() -> None:
    names = _metric_names()
    exprs = _dashboard_exprs(_dashboard())
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        referenced = _referenced(expr)
        assert referenced, f"no SBC metric in {expr!r}"
        unknown = {name for name in referenced if not _known(name, names)}
        assert not unknown, f"{sorted(unknown)} not in sbc/metrics.py: {expr!r}"
        used |= referenced
    # What the operations issue asks the dashboard to show.
    for family in (
        "sbc_calls_active",
        "sbc_call_attempts",
        "sbc_call_outcomes",
        "sbc_call_setup_seconds",
        "sbc_trunk_up",
        "sbc_registration_state",
        "sbc_admission_rejections",
        "sbc_security_blocks",
        "sbc_media_packets",
        "sbc_media_packet_loss_ratio",
        "sbc_media_jitter_seconds",
        "sbc_media_mos",
        "sbc_media_worker_up",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
    ):
        assert any(name == family or name.startswith(family + "_") for name in used), family


def test_scrape_config() -> None:
    config = yaml.safe_load(SCRAPE.read_text())
    assert "sbc-alerts.yml" in config["rule_files"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["sbc"]["metrics_path"] == "/metrics"
    # Alerts select the scrape jobs by name.
    alerts = ALERTS.read_text()
    for job in jobs:
        assert job in alerts, job


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return tool


def test_promtool_checks_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_scrape_config(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes service discovery: that job is left
    out of the copy it checks."""
    config = yaml.safe_load(SCRAPE.read_text())
    config["scrape_configs"] = [
        job for job in config["scrape_configs"] if "kubernetes_sd_configs" not in job
    ]
    config["rule_files"] = [str(ALERTS)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [_promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_dashboard_queries(tmp_path: Path) -> None:
    """Each dashboard query, with Grafana's variables filled in, as a recording rule: promtool
    then parses every one."""
    tool = _promtool()
    rules = []
    for i, expr in enumerate(_dashboard_exprs(_dashboard())):
        if expr.startswith("label_values("):
            continue  # Grafana's own function, not PromQL
        expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        rules.append({"record": f"sbc:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests() -> None:
    """deploy/prometheus/sbc-alerts.test.yml: series in, the alerts expected out (and no
    others), e.g. no answered call while calls are offered, a refused third, low MOS."""
    tests = DEPLOY / "prometheus" / "sbc-alerts.test.yml"
    result = subprocess.run(
        [_promtool(), "test", "rules", tests.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tests.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
