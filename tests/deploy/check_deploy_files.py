#!/usr/bin/python3
"""DeployFilesParse: the deployment files parse and agree with each other and with the binaries.

usage: check_deploy_files.py <source dir> [<recall-server> <recall-train> <recall-cli>]

Checks (each failure is printed; the exit code is 1 if any):
  - every *.yml / *.yaml / *.json under deploy/ and docker-compose.yml parses;
  - `docker-compose -f docker-compose.yml config -q` (skipped when docker-compose is missing);
  - `promtool check config` / `check rules` / `test rules` on deploy/prometheus/, and every
    PromQL expression of the Grafana dashboard parses (skipped when promtool is missing);
  - the Dockerfile's builder stage runs the README's build (deploy/install-deps.sh, then
    deploy/build.sh) and its runtime stage is the one the docs describe;
  - compose services, Grafana provisioning and dashboard, and the Kubernetes manifests fit
    together (ports, volumes, datasource uid, grpc probes, PVC, kustomization);
  - with the binaries given: every flag the deployment files pass to recall-server and
    recall-train exists (their --help), and the healthcheck's recall-cli command exists.
Must run under Debian's /usr/bin/python3 (python3-yaml).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
BINARIES = sys.argv[2:5] if len(sys.argv) >= 5 else None
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def ok(msg):
    print("ok:   " + msg)


def rel(path):
    return os.path.relpath(path, SRC)


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=SRC, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120, **kw)


# ---- 1. everything parses -----------------------------------------------------------------
parsed = {}
files = [os.path.join(SRC, "docker-compose.yml")]
for root, _, names in os.walk(os.path.join(SRC, "deploy")):
    for n in sorted(names):
        if n.endswith((".yml", ".yaml", ".json")):
            files.append(os.path.join(root, n))
for path in files:
    try:
        with open(path) as f:
            if path.endswith(".json"):
                parsed[rel(path)] = [json.load(f)]
            else:
                parsed[rel(path)] = [d for d in yaml.safe_load_all(f)]
        ok(f"parses: {rel(path)}")
    except Exception as e:  # noqa: BLE001 - report every parse error
        fail(f"{rel(path)} does not parse: {e}")


def doc(path, i=0):
    docs = parsed.get(path)
    if not docs or docs[i] is None:
        fail(f"{path}: missing or empty")
        return {}
    return docs[i]


for required in ["docker-compose.yml", "deploy/prometheus/prometheus.yml",
                 "deploy/grafana/provisioning/datasources/prometheus.yml",
                 "deploy/grafana/provisioning/dashboards/tower-recall.yml",
                 "deploy/grafana/dashboards/tower-recall.json",
                 "deploy/k8s/deployment.yaml", "deploy/k8s/service.yaml",
                 "deploy/k8s/configmap.yaml", "deploy/k8s/pvc.yaml",
                 "deploy/k8s/retrain-job.yaml", "deploy/k8s/kustomization.yaml"]:
    if required not in parsed:
        fail(f"{required} is missing")

# ---- 2. docker-compose ----------------------------------------------------------------------
if shutil.which("docker-compose"):
    r = run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"])
    if r.returncode != 0:
        fail(f"docker-compose config -q: exit {r.returncode}: {r.stdout.strip()}")
    else:
        ok("docker-compose -f docker-compose.yml config -q")
else:
    print("skipping docker-compose config check: docker-compose is not installed "
          "(bash deploy/install-deps.sh installs it)")

compose = doc("docker-compose.yml")
services = compose.get("services", {}) if isinstance(compose, dict) else {}
for name in ["server", "prometheus", "grafana", "trainer"]:
    if name not in services:
        fail(f"docker-compose.yml: no service {name!r}")
server = services.get("server", {})
trainer = services.get("trainer", {})
build = server.get("build", {})
if not (isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"):
    fail("docker-compose.yml: server is not built from deploy/Dockerfile")
ports = " ".join(str(p) for p in server.get("ports", []))
for port in ["50051", "9464"]:
    if port not in ports:
        fail(f"docker-compose.yml: server does not publish port {port}")
if "healthcheck" not in server:
    fail("docker-compose.yml: server has no healthcheck")
if trainer.get("profiles") != ["train"]:
    fail("docker-compose.yml: trainer is not under profiles: [train]")
trainer_cmd = trainer.get("command", [])
if "--model_base=/models" not in trainer_cmd or trainer.get("entrypoint") != ["recall-train"]:
    fail("docker-compose.yml: trainer does not run recall-train --model_base=/models")


def volume_source(svc, target):
    for v in svc.get("volumes", []):
        parts = str(v).split(":")
        if len(parts) >= 2 and parts[1] == target:
            return parts[0]
    return None


if volume_source(server, "/models") is None or \
        volume_source(server, "/models") != volume_source(trainer, "/models"):
    fail("docker-compose.yml: server and trainer do not share one volume at /models")
if "--model_base=/models" not in server.get("command", []):
    fail("docker-compose.yml: server does not serve --model_base=/models")
prom_svc = services.get("prometheus", {})
if volume_source(prom_svc, "/etc/prometheus") != "./deploy/prometheus":
    fail("docker-compose.yml: prometheus does not mount ./deploy/prometheus at /etc/prometheus")
graf = services.get("grafana", {})
if volume_source(graf, "/etc/grafana/provisioning") != "./deploy/grafana/provisioning":
    fail("docker-compose.yml: grafana does not mount deploy/grafana/provisioning")
dash_mount = None
for v in graf.get("volumes", []):
    parts = str(v).split(":")
    if parts[0] == "./deploy/grafana/dashboards":
        dash_mount = parts[1]
if dash_mount is None:
    fail("docker-compose.yml: grafana does not mount deploy/grafana/dashboards")
env = graf.get("environment", {})
if str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "")).lower() != "true" or \
        env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") != "Viewer":
    fail("docker-compose.yml: grafana has no anonymous Viewer access")
# Online writes: the server logs them to the compose NATS (JetStream on a named volume).
nats_svc = services.get("nats", {})
nats_cmd = [str(c) for c in nats_svc.get("command", [])]
if "-js" not in nats_cmd or volume_source(nats_svc, nats_cmd[nats_cmd.index("-sd") + 1]
                                            if "-sd" in nats_cmd else "/data") is None:
    fail("docker-compose.yml: no nats service running JetStream (-js -sd DIR) on a volume")
if "--write_log=nats://nats:4222" not in server.get("command", []):
    fail("docker-compose.yml: server does not log online writes to nats://nats:4222")
ok("docker-compose.yml: services, ports, volumes, profiles, nats")

# ---- 3. Prometheus ------------------------------------------------------------------------
prom = doc("deploy/prometheus/prometheus.yml")
jobs = {j.get("job_name"): j for j in prom.get("scrape_configs", [])} if prom else {}
job = jobs.get("recall-server")
if not job:
    fail("deploy/prometheus/prometheus.yml: no scrape job 'recall-server'")
else:
    if job.get("scrape_interval") != "5s":
        fail("deploy/prometheus/prometheus.yml: job recall-server does not scrape every 5s")
    targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    if "server:9464" not in targets:
        fail("deploy/prometheus/prometheus.yml: job recall-server does not scrape server:9464")

dashboard = doc("deploy/grafana/dashboards/tower-recall.json")


def exprs_of(node):
    """Every PromQL expression in a dashboard: targets, annotations, query variables."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                out.append(v)
            elif k == "query" and isinstance(v, str) and "label_values" not in v:
                out.append(v)
            else:
                out.extend(exprs_of(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(exprs_of(v))
    return out


def grafana_to_promql(e):
    e = e.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", e)


promtool = shutil.which("promtool")
if promtool:
    for cmd in (["check", "config", "deploy/prometheus/prometheus.yml"],
                ["check", "rules", "deploy/prometheus/alerts.yml"],
                ["test", "rules", "deploy/prometheus/alerts_test.yml"]):
        if cmd[-1].endswith("alerts_test.yml") and not os.path.exists(os.path.join(SRC, cmd[-1])):
            continue
        r = run([promtool] + cmd)
        if r.returncode != 0:
            fail(f"promtool {' '.join(cmd)}: exit {r.returncode}:\n{r.stdout}")
        else:
            ok(f"promtool {' '.join(cmd)}")
    # The dashboard's PromQL, with Grafana's variables substituted, as recording rules: promtool
    # parses each expression.
    exprs = exprs_of(dashboard)
    with tempfile.TemporaryDirectory() as tmp:
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(e)}
            for i, e in enumerate(exprs)]}]}
        path = os.path.join(tmp, "dashboard_rules.yml")
        with open(path, "w") as f:
            yaml.safe_dump(rules, f)
        r = run([promtool, "check", "rules", path])
        if r.returncode != 0:
            fail(f"dashboard PromQL does not parse (promtool check rules):\n{r.stdout}")
        else:
            ok(f"dashboard: {len(exprs)} PromQL expressions parse")
else:
    print("skipping promtool checks: promtool is not installed "
          "(bash deploy/install-deps.sh installs the prometheus package)")

# ---- 4. Grafana -----------------------------------------------------------------------------
ds = doc("deploy/grafana/provisioning/datasources/prometheus.yml")
ds_uids = {d.get("uid") for d in ds.get("datasources", [])} if ds else set()
provider = doc("deploy/grafana/provisioning/dashboards/tower-recall.yml")
paths = [p.get("options", {}).get("path") for p in provider.get("providers", [])] if provider else []
if dash_mount and dash_mount not in paths:
    fail(f"grafana dashboard provider path {paths} is not where compose mounts the dashboards "
         f"({dash_mount})")
if dashboard:
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        fail("dashboard: schemaVersion missing or older than 36")
    ids = []
    for p in dashboard.get("panels", []):
        ids.append(p.get("id"))
        if p.get("type") == "row":
            continue
        uid = (p.get("datasource") or {}).get("uid")
        if uid not in ds_uids:
            fail(f"dashboard panel {p.get('title')!r}: datasource uid {uid!r} is not a provisioned "
                 f"one {sorted(ds_uids)}")
        for t in p.get("targets", []):
            if (t.get("datasource") or {}).get("uid") not in ds_uids:
                fail(f"dashboard panel {p.get('title')!r}: a target's datasource is not provisioned")
        if not p.get("targets"):
            fail(f"dashboard panel {p.get('title')!r} has no query")
    if len(ids) != len(set(ids)):
        fail("dashboard: panel ids are not unique")
    # Every metric DESIGN.md promises has a panel (recall_* names in the PromQL).
    used = set(re.findall(r"recall_[a-z0-9_]+", " ".join(exprs_of(dashboard))))
    for m in ["recall_requests_total", "recall_request_duration_seconds_bucket",
              "recall_stage_duration_seconds_bucket", "recall_batch_size_bucket",
              "recall_batch_size_sum", "recall_batch_size_count", "recall_in_flight_requests",
              "recall_index_items", "recall_index_hidden_items", "recall_serving_model_version",
              "recall_upserted_items_total", "recall_deleted_items_total", "recall_wal_bytes_total",
              "recall_wal_fsync_duration_seconds_bucket", "recall_version_loads_total",
              "recall_version_load_duration_seconds_bucket", "recall_retrain_jobs_total",
              "recall_retrain_running", "recall_retrain_last_success_timestamp_seconds"]:
        if m not in used:
            fail(f"dashboard: no panel queries {m}")
    ok(f"dashboard: {len(ids)} panels, datasource uid {sorted(ds_uids)}, every metric has a panel")

# ---- 5. Dockerfile --------------------------------------------------------------------------
dockerfile_path = os.path.join(SRC, "deploy", "Dockerfile")
if not os.path.exists(dockerfile_path):
    fail("deploy/Dockerfile is missing")
    stages = []
else:
    text = open(dockerfile_path).read()
    # join continuation lines, drop comments
    lines = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    stages = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append({"from": line, "lines": []})
        elif stages:
            stages[-1]["lines"].append(line)
    builder = [s for s in stages if re.search(r"\bAS\s+builder\b", s["from"], re.I)]
    if not builder or not re.match(r"FROM\s+debian:12\b", builder[0]["from"], re.I):
        fail("Dockerfile: no 'FROM debian:12 AS builder' stage")
    else:
        runs = " ".join(l for l in builder[0]["lines"] if l.upper().startswith("RUN "))
        i_deps = runs.find("deploy/install-deps.sh")
        i_build = runs.find("deploy/build.sh")
        if i_deps < 0 or i_build < 0 or i_build < i_deps:
            fail("Dockerfile: the builder stage does not run deploy/install-deps.sh then "
                 "deploy/build.sh (the README's build)")
        elif re.search(r"deploy/build\.sh\s+[a-z]", runs):
            fail("Dockerfile: the builder runs deploy/build.sh with targets; the README's build "
                 "is everything")
        elif "ctest" in runs:
            fail("Dockerfile: the builder runs ctest (tests belong to CI: deploy/test.sh)")
        else:
            ok("Dockerfile: builder runs deploy/install-deps.sh then deploy/build.sh")
    if len(stages) < 2 or not re.match(r"FROM\s+debian:12\b", stages[-1]["from"], re.I):
        fail("Dockerfile: the final stage is not a debian:12 runtime stage")
    else:
        rt = "\n".join(stages[-1]["lines"])
        for pattern, what in [
                (r'^ENTRYPOINT \["recall-server"\]$', 'ENTRYPOINT ["recall-server"]'),
                (r"^CMD \[.*\"--model_base=/models\".*\"--host=0\.0\.0\.0\".*\"--metrics_host=0\.0\.0\.0\"",
                 "CMD with --model_base=/models --host=0.0.0.0 --metrics_host=0.0.0.0"),
                (r"^USER 10001", "USER 10001"),
                (r"^EXPOSE 50051 9464$", "EXPOSE 50051 9464"),
                (r'^VOLUME \["?/models"?\]', "VOLUME /models"),
                (r"--no-install-recommends", "apt-get install --no-install-recommends"),
                (r"^COPY --from=builder .*recall-server.*recall-train.*recall-cli.* /usr/local/bin/",
                 "COPY --from=builder of recall-server, recall-train, recall-cli to /usr/local/bin")]:
            if not re.search(pattern, rt, re.M):
                fail(f"Dockerfile runtime stage: no {what}")
        if re.search(r"-dev\b", " ".join(l for l in stages[-1]["lines"] if l.startswith("RUN"))):
            fail("Dockerfile runtime stage installs -dev packages")
        ok("Dockerfile: runtime stage")
dockerignore = os.path.join(SRC, ".dockerignore")
if not os.path.exists(dockerignore):
    fail(".dockerignore is missing")
else:
    entries = {l.strip().rstrip("/") for l in open(dockerignore) if l.strip() and not l.startswith("#")}
    for e in [".git", "build", "run"]:
        if e not in entries:
            fail(f".dockerignore does not exclude {e}")

# ---- 6. Kubernetes --------------------------------------------------------------------------
dep = doc("deploy/k8s/deployment.yaml")
containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) if dep else []
srv = next((c for c in containers if c.get("name") == "recall-server"), None)
if srv is None:
    fail("deploy/k8s/deployment.yaml: no container recall-server")
    srv = {}
for probe in ["readinessProbe", "livenessProbe"]:
    grpc = (srv.get(probe) or {}).get("grpc")
    if not grpc or grpc.get("port") != 50051:
        fail(f"deploy/k8s/deployment.yaml: {probe} is not a grpc probe on port 50051")
if "resources" not in srv:
    fail("deploy/k8s/deployment.yaml: no resources")
mounts = {m.get("name"): m.get("mountPath") for m in srv.get("volumeMounts", [])}
pod_volumes = dep.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []) if dep else []
pvc = doc("deploy/k8s/pvc.yaml")
pvc_name = pvc.get("metadata", {}).get("name") if pvc else None
if "ReadWriteMany" not in (pvc.get("spec", {}).get("accessModes", []) if pvc else []):
    fail("deploy/k8s/pvc.yaml: not ReadWriteMany")


def claims_pvc_at_models(pod_spec, container):
    m = {v.get("name"): v for v in pod_spec.get("volumes", [])}
    for vm in container.get("volumeMounts", []):
        if vm.get("mountPath") == "/models":
            claim = (m.get(vm.get("name"), {}).get("persistentVolumeClaim") or {}).get("claimName")
            return claim == pvc_name
    return False


if dep and not claims_pvc_at_models(dep["spec"]["template"]["spec"], srv):
    fail(f"deploy/k8s/deployment.yaml: the PVC {pvc_name} is not mounted at /models")
annotations = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}) if dep else {}
if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != "9464":
    fail("deploy/k8s/deployment.yaml: no prometheus.io scrape annotations for port 9464")
cm = doc("deploy/k8s/configmap.yaml")
cm_name = cm.get("metadata", {}).get("name") if cm else None
refs = [e.get("configMapRef", {}).get("name") for e in srv.get("envFrom", [])]
if cm_name not in refs:
    fail(f"deploy/k8s/deployment.yaml: does not read the ConfigMap {cm_name}")
cm_data = dict(cm.get("data", {}) if cm else {})
# $(VAR) may also name an env var the container defines itself (e.g. the pod name).
for e in srv.get("env", []):
    cm_data.setdefault(e.get("name"), f"<{e.get('name')}>")
server_args = []
for a in srv.get("args", []):
    server_args.append(re.sub(r"\$\((\w+)\)", lambda m_: str(cm_data.get(m_.group(1), "<undefined " + m_.group(1) + ">")), a))
for a in server_args:
    if "<undefined" in a:
        fail(f"deploy/k8s/deployment.yaml: arg {a} refers to a key the ConfigMap lacks")
svc = doc("deploy/k8s/service.yaml")
svc_ports = {p.get("port") for p in svc.get("spec", {}).get("ports", [])} if svc else set()
if not {50051, 9464} <= svc_ports:
    fail(f"deploy/k8s/service.yaml: ports {sorted(svc_ports)} lack 50051 or 9464")
job = doc("deploy/k8s/retrain-job.yaml")
job_spec = job.get("spec", {}).get("template", {}).get("spec", {}) if job else {}
jc = (job_spec.get("containers") or [{}])[0]
if job and (job.get("kind") != "Job" or jc.get("command") != ["recall-train"] or
            "--model_base=/models" not in jc.get("args", []) or not claims_pvc_at_models(job_spec, jc)):
    fail("deploy/k8s/retrain-job.yaml: not a Job running recall-train --model_base=/models on the PVC")
kust = doc("deploy/k8s/kustomization.yaml")
listed = set(kust.get("resources", [])) if kust else set()
on_disk = {n for n in os.listdir(os.path.join(SRC, "deploy", "k8s"))
           if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml"}
if listed != on_disk:
    fail(f"deploy/k8s/kustomization.yaml lists {sorted(listed)}, the folder has {sorted(on_disk)}")
# NATS: a 3-node JetStream StatefulSet with cluster routes and PVCs, and the replicas write to
# it at R=3; no pod-local write-ahead log is left.
nats_docs = {d.get("kind"): d for d in parsed.get("deploy/k8s/nats.yaml", []) if d}
sts = nats_docs.get("StatefulSet", {})
sts_spec = sts.get("spec", {})
nats_conf = (nats_docs.get("ConfigMap", {}).get("data", {}) or {}).get("nats.conf", "")
if sts_spec.get("replicas") != 3 or not sts_spec.get("volumeClaimTemplates"):
    fail("deploy/k8s/nats.yaml: not a 3-node StatefulSet with volumeClaimTemplates")
if "jetstream" not in nats_conf or not all(f"nats-{i}.nats:6222" in nats_conf for i in range(3)):
    fail("deploy/k8s/nats.yaml: nats.conf lacks JetStream or the routes to nats-0..2")
if (nats_docs.get("Service", {}).get("spec", {}) or {}).get("clusterIP") != "None":
    fail("deploy/k8s/nats.yaml: the nats Service is not headless")
write_log = next((a for a in server_args if a.startswith("--write_log=")), "")
if not all(f"nats-{i}.nats:4222" in write_log for i in range(3)):
    fail(f"deploy/k8s/deployment.yaml: --write_log does not list the three NATS nodes: {write_log}")
if "--write_stream_replicas=3" not in server_args:
    fail("deploy/k8s/deployment.yaml: the write stream is not R=3")
if any(v.get("emptyDir") is not None and v.get("name") == "wal" for v in pod_volumes):
    fail("deploy/k8s/deployment.yaml: still an emptyDir write-ahead log")
# Data-parallel training: an Indexed Job of N ranks whose --rank is the completion index and
# whose --world_size is N, and a headless Service that resolves rank 0 for the rendezvous.
ranks_job = doc("deploy/k8s/train-ranks/job.yaml")
ranks_svc = doc("deploy/k8s/train-ranks/service.yaml")
rj_spec = ranks_job.get("spec", {}) if ranks_job else {}
rj_pod = rj_spec.get("template", {}).get("spec", {})
rj_c = (rj_pod.get("containers") or [{}])[0]
rj_args = rj_c.get("args", [])
rj_env = {e.get("name"): e for e in rj_c.get("env", [])}
rank_arg = next((a for a in rj_args if a.startswith("--rank=")), "")
rank_var = rank_arg[len("--rank=$("):-1] if rank_arg.startswith("--rank=$(") else ""
if (rj_spec.get("completionMode") != "Indexed" or
        rj_spec.get("completions") != rj_spec.get("parallelism") or
        f"--world_size={rj_spec.get('completions')}" not in rj_args):
    fail("deploy/k8s/train-ranks/job.yaml: not an Indexed Job with completions = parallelism = --world_size")
if "job-completion-index" not in str(rj_env.get(rank_var, {}).get("valueFrom", "")):
    fail("deploy/k8s/train-ranks/job.yaml: --rank is not the pod's completion index")
svc_name = (ranks_svc.get("metadata", {}) or {}).get("name") if ranks_svc else None
if ((ranks_svc.get("spec", {}) or {}).get("clusterIP") != "None" or rj_pod.get("subdomain") != svc_name or
        f"--master_addr={ranks_job['metadata']['name']}-0.{svc_name}" not in rj_args):
    fail("deploy/k8s/train-ranks: rank 0 is not reached through a headless Service as <job>-0.<service>")
ok("deploy/k8s: probes, PVC, ConfigMap, Service, Job, kustomization, NATS, training ranks")

# ---- 7. flags against the binaries ------------------------------------------------------------
def gflags_of(binary):
    r = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    # gflags lists "  -name (doc)"; recall-train's TrainConfig options are "  --name (type...)"
    return set(re.findall(r"^\s+--?(\w+) \(", r.stdout, re.M))


def check_flags(args, known, where, tool):
    for a in args:
        m = re.match(r"--(\w+)(=|$)", str(a))
        if m and m.group(1) not in known:
            fail(f"{where}: {tool} has no flag --{m.group(1)}")


if BINARIES:
    server_bin, train_bin, cli_bin = BINARIES
    server_flags, train_flags = gflags_of(server_bin), gflags_of(train_bin)
    if not server_flags or not train_flags:
        fail("cannot read the flags of recall-server / recall-train from --help")
    check_flags(server.get("command", []), server_flags, "docker-compose.yml server", "recall-server")
    check_flags(server_args, server_flags, "deploy/k8s/deployment.yaml", "recall-server")
    check_flags(trainer_cmd, train_flags, "docker-compose.yml trainer", "recall-train")
    check_flags(jc.get("args", []), train_flags, "deploy/k8s/retrain-job.yaml", "recall-train")
    check_flags(rj_args, train_flags, "deploy/k8s/train-ranks/job.yaml", "recall-train")
    for s in stages[-1:]:
        for line in s["lines"]:
            if line.startswith("CMD "):
                check_flags(json.loads(line[4:]), server_flags, "Dockerfile CMD", "recall-server")
    test = server.get("healthcheck", {}).get("test", [])
    if test[:3] != ["CMD", "recall-cli", "health"]:
        fail(f"docker-compose.yml: server healthcheck {test} is not 'recall-cli health'")
    elif subprocess.run([cli_bin, "help", "health"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, timeout=30).returncode != 0:
        fail("recall-cli has no 'health' command (the compose healthcheck uses it)")
    ok("flags in compose, Dockerfile, k8s exist in recall-server / recall-train --help")
else:
    print("skipping flag checks: no binaries given")

if failures:
    print(f"\n{len(failures)} failure(s)")
    sys.exit(1)
print("\nall deploy files check out")
