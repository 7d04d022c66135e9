"""Helpers the tests share: free ports, a real S3 server (SeaweedFS), and the real datasets."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cityfactory.services import api_call, login_token

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
S3_BUCKET = "cityfactory-lake"  # the session's one bucket on the test S3 server (tests get a prefix each)
# Debian's Chromium (.ci/run installs it), headless as root on a closed network: the flags keep it
# from calling out
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
METRO_CSV = REPO.parent / "shared" / "data" / "metro_interstate_traffic_volume" / "Metro_Interstate_Traffic_Volume.csv"


def postgres_admin(sql: str) -> None:
    """Run one statement as the local PostgreSQL superuser (trust auth on our machines)."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def embedded_env(home: Path) -> dict[str, str]:
    """The environment of a private embedded stack (Airflow home, lake, keys, OpenLineage file
    transport) under ``home``."""
    events = openlineage_events(home)
    events.parent.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "cityfactory",
        "CITYFACTORY_HOME": str(home),
        "CITYFACTORY_LAKE_URI": (home / "lake").as_uri(),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # a search of one trial: the spec's hand-set model; tests that want a search ask for one
        "CITYFACTORY_SEARCH_TRIALS": "1",
    }


def openlineage_events(home: Path) -> Path:
    return home / "lake" / "governance" / "openlineage" / "events.jsonl"


def scaffold_project(root: Path, monkeypatch) -> Path:
    """An empty project beside the repo's code, as a new user starts one: no scenarios, a copy of the
    dbt project (its macros and its shipped models), the model-card templates; every folder the
    settings name points here. Returns the data folder."""
    for folder in ("scenarios", "models", "expectations", "fleets", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(f"CITYFACTORY_{folder.upper()}_DIR", str(root / folder))
    shutil.copytree(REPO / "dbt", root / "dbt", ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    monkeypatch.setenv("CITYFACTORY_DBT_DIR", str(root / "dbt"))
    for card in (REPO / "models").glob("*.md"):
        shutil.copy(card, root / "models")
    return root / "data"


def inspection_images(folder: Path, per_class: int = 60, size: int = 64, seed: int = 3) -> Path:
    """A labelled image folder as many datasets ship: one subfolder per class. Greyscale frames of a
    textured surface (smooth shading and grain, each its own); the ``cracked`` ones carry a dark
    line of random place and angle. Returns the folder."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for label in ("intact", "cracked"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            y, x = np.mgrid[0:size, 0:size] / size
            shade = 110 + 40 * rng.uniform(-1, 1) * x + 30 * rng.uniform(-1, 1) * y
            pixels = np.clip(shade + rng.normal(0, 12, (size, size)), 0, 255).astype("uint8")
            image = Image.fromarray(pixels, mode="L")
            if label == "cracked":
                a, b = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
                ImageDraw.Draw(image).line([tuple(a), tuple(b)], fill=int(rng.uniform(10, 40)), width=2)
            image.save(folder / label / f"{label}_{i:03d}.png")
    return folder


def write_fleet(directory: Path, name: str, size: int, past_hours: float | None = None) -> Path:
    """A fleet file of ``size`` loopback nodes on free ports, beside copies of the repo's other
    fleets (so every scenario still loads); returns the fleets folder. ``past_hours``: how far back
    the nodes accept keys, for tests whose replayed consumers ask about days well in the past."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    for other in (REPO / "dags" / "fleets").glob("*.yaml"):
        if not (directory / other.name).exists():
            shutil.copy(other, directory)
    nodes = [{"id": f"{name}-{i + 1}", "district": f"d{i % 3}", "url": f"http://127.0.0.1:{port}"}
             for i, port in enumerate(free_ports(size))]
    fleet = {"nodes": nodes} | ({"logging": {"past_hours": past_hours}} if past_hours else {})
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(fleet))
    return directory


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with closing(socket.socket()) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def start_seaweedfs(workdir: Path) -> S3Server:
    """``weed server -s3`` on free loopback ports, with one access key; stop with ``stop_seaweedfs``."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    workdir.mkdir(parents=True, exist_ok=True)
    access, secret = "cityfactory-test", "test-secret-" + os.urandom(6).hex()
    config = {"identities": [{"name": "tests", "credentials": [{"accessKey": access, "secretKey": secret}],
                              "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
    (workdir / "s3.json").write_text(json.dumps(config))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    command = [
        weed, "server", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={workdir / 's3.json'}", "-s3.iam=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", "-volume.max=50", "-master.volumeSizeLimitMB=64", "-iam=false",
    ]
    with open(workdir / "weed.log", "wb") as log:  # the child keeps its own handle
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    server = S3Server(f"http://127.0.0.1:{s3}", access, secret, process)
    wait_for_port(s3)
    _wait_until_writable(server)
    return server


def _wait_until_writable(server: S3Server, timeout: float = 60) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_bucket(Bucket="readiness")
            client.put_object(Bucket="readiness", Key="probe", Body=b"ok")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop_seaweedfs(server: S3Server) -> None:
    """Its data is the session's scratch: a few seconds to stop cleanly, then killed (a clean stop
    of master, volume and filer took 20 s and more)."""
    server.process.terminate()
    try:
        server.process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


BEIJING = REPO.parent / "shared" / "data" / "beijing_multisite_air_quality"


def harbour_dataset(directory: Path, stations: dict[str, str], first: str, last: str) -> dict[str, str]:
    """The harbour_air fixture's files, written from real Beijing station files (renamed, another
    dialect: ';' separated, decimal commas, -200 for missing, a blank trailing header column,
    date and time in two columns, CRLF), rows from ``first`` to ``last`` (YYYY-MM-DD);
    returns file name -> sha256."""
    import csv
    import hashlib

    directory.mkdir(parents=True, exist_ok=True)
    pins = {}
    for source, (name, renamed) in stations.items():
        out = ["date;time;station;PM2.5;PM10;SO2;NO2;CO;O3;TEMP;PRES;DEWP;RAIN;wd;WSPM;"]
        with open(next(BEIJING.glob(f"PRSA_Data_{source}_*.csv")), newline="") as handle:
            for row in csv.DictReader(handle):
                day = f"{row['year']}-{int(row['month']):02d}-{int(row['day']):02d}"
                if not first <= day <= last:
                    continue
                values = [row[c] for c in ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN")]
                values = ["-200" if v == "NA" else v.replace(".", ",") for v in values]
                wd = "" if row["wd"] == "NA" else row["wd"]
                wspm = "-200" if row["WSPM"] == "NA" else row["WSPM"].replace(".", ",")
                date = f"{int(row['day']):02d}/{int(row['month']):02d}/{row['year']}"
                out.append(";".join([date, f"{int(row['hour']):02d}.00.00", renamed, *values, wd, wspm, ""]))
        data = ("\r\n".join(out) + "\r\n").encode()
        (directory / name).write_bytes(data)
        pins[name] = hashlib.sha256(data).hexdigest()
    return pins


def wait_for(predicate, timeout: float, what: str, every: float = 2):
    """``predicate()``'s first truthy result (a 404 counts as not yet)."""
    import urllib.error

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := predicate():
                return result
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        time.sleep(every)
    raise TimeoutError(what)


class FaultyProxy:
    """An HTTP proxy in front of one edge node that drops the connection, without an answer, for
    the next ``times`` requests to a path: a real transient network fault, on the wire."""

    def __init__(self, target: str):
        import http.server
        import threading

        import httpx

        proxy = self
        self.target, self.faults, self.dropped = target.rstrip("/"), {}, []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                with proxy.lock:
                    left = proxy.faults.get(self.path, 0)
                    if left:
                        proxy.faults[self.path] = left - 1
                        proxy.dropped.append(self.path)
                if left:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                answer = httpx.request(self.command, proxy.target + self.path, content=body, headers=headers, timeout=60)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, path: str, times: int) -> None:
        with self.lock:
            self.faults[path] = times

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def production_stack(home: Path, workers: int, extra_env: dict | None = None, broker_db: int = 7,
                     component_env: dict | None = None):
    """Airflow with the Celery executor and ``workers`` named workers on this machine's PostgreSQL
    and Redis, MLflow on PostgreSQL: fresh databases, dropped after. Yields (stack, API token)."""
    import uuid

    import mlflow
    import redis
    from cityfactory.celery_stack import CeleryStack

    airflow_db, mlflow_db = (f"cityfactory_{what}_{uuid.uuid4().hex[:8]}" for what in ("airflow", "mlflow"))
    for database in (airflow_db, mlflow_db):
        postgres_admin(f"CREATE DATABASE {database}")
    redis.Redis(host="127.0.0.1", port=6379, db=broker_db).flushdb()
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"postgresql://postgres@127.0.0.1:5432/{mlflow_db}"
    mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).search_experiments()  # schema made once, before workers race
    [port] = free_ports(1)
    stack = CeleryStack(home / "airflow", f"postgresql://postgres@127.0.0.1:5432/{airflow_db}",
                        f"redis://127.0.0.1:6379/{broker_db}", port, workers=workers, extra_env=dict(extra_env or {}),
                        component_env=dict(component_env or {}))
    try:
        with stack:
            yield stack, login_token(stack.base_url, stack.password)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
        for database in (airflow_db, mlflow_db):
            postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def trigger_and_wait(stack, token: str, dag_id: str, conf: dict, timeout: float = 1800) -> tuple[dict, list[dict]]:
    """Trigger a run through the REST API (as the UI's form does), wait for it; the run and its
    task instances."""
    base = f"{stack.base_url}/api/v2/dags/{dag_id}"
    wait_for(lambda: api_call("GET", base, token), 180, f"{dag_id} not parsed")
    run_id = api_call("POST", f"{base}/dagRuns", token, {"logical_date": None, "conf": conf})["dag_run_id"]
    return finished_run(stack, token, dag_id, run_id, timeout)


def finished_run(stack, token: str, dag_id: str, run_id: str, timeout: float = 1800) -> tuple[dict, list[dict]]:
    """Wait for a run to end (success or failed); the run and its task instances."""
    base = f"{stack.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}"

    def finished():
        run = api_call("GET", base, token)
        return run if run["state"] in ("success", "failed") else None

    run = wait_for(finished, timeout, f"{dag_id} run {run_id} did not finish")
    return run, api_call("GET", f"{base}/taskInstances?limit=1000", token)["task_instances"]


def scenarios_copy(folder: Path, change=lambda config: None) -> Path:
    """The repo's scenario files in ``folder``, each passed through ``change(config)`` first."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    for path in (REPO / "dags" / "scenarios").glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        change(config)
        (folder / path.name).write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def not_scheduled_yet(config: dict) -> None:
    """No scheduled run during a test that happens to span the scenario's nightly time: a cron
    that fires on 29 February only."""
    config["schedule"] = "0 3 29 2 *"


def logged_in_page(playwright, base: str, password: str, width: int = 1400, height: int = 900, username: str = "admin"):
    """Debian's Chromium, headless, logged in to the Airflow UI at ``base`` (as admin unless named): (browser, page)."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(f"{base}/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    return browser, page


# The harbour_air fixture scenario (tests/fixtures): three renamed Beijing stations
HARBOUR_STATIONS = {"Aotizhongxin": ("quay_north.csv", "Quay North"), "Dingling": ("quay_south.csv", "Quay South"),
                    "Shunyi": ("lighthouse.csv", "Lighthouse")}


def configure_harbour_air(root, monkeypatch, first="2015-06-01", last="2016-05-31", stations=HARBOUR_STATIONS) -> None:
    """A config tree like the repo's for the fixture scenario, pins filled in from the data written."""
    import yaml

    pins = harbour_dataset(root / "data" / "harbour_air_fixture", stations, first, last)
    scenario = yaml.safe_load((FIXTURES / "scenarios" / "harbour_air.yaml").read_text())
    scenario["source"]["files"] = [{"name": name, "sha256": sha} for name, sha in pins.items()]
    (root / "scenarios").mkdir(parents=True, exist_ok=True)
    (root / "scenarios" / "harbour_air.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
    (root / "models").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "models" / "harbour_air.yaml", root / "models")
    shutil.copy(REPO / "models" / "model_card.md", root / "models")
    (root / "expectations").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "expectations" / "harbour_air_bronze.json", root / "expectations")
    shutil.copy(REPO / "expectations" / "air_quality_features.json", root / "expectations")
    for name, path in {"SCENARIOS": "scenarios", "MODELS": "models", "EXPECTATIONS": "expectations", "DATA": "data"}.items():
        monkeypatch.setenv(f"CITYFACTORY_{name}_DIR", str(root / path))
    monkeypatch.setenv("CITYFACTORY_FLEETS_DIR", str(write_fleet(root / "fleets", "harbour_air", 3)))
