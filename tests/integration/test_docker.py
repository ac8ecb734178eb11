"""docker/ (issue 5 item 5): the Dockerfile and the compose file, checked
without a Docker engine (none runs on the project's machines).

The Dockerfile is parsed and its build stage is replayed here: the files it
COPYs are copied into a temp dir and its RUN lines run there, so the image
builds through exactly the scripts the test command uses (scripts/deps.sh,
scripts/build.sh) and from nothing but the files it copies. The rest checks
what a reviewer would: every referenced file exists (and survives the
.dockerignore), Debian 12 bases, a non-root user, the daemon as PID 1 in
exec form, a HEALTHCHECK that means something (docker/healthcheck.sh, run
here against a real bridge and broker), and a compose file with mosquitto,
the bridge and an optional simulator service.
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

import harness

ROOT = harness.SOURCE_DIR
DOCKER_DIR = os.path.join(ROOT, "docker")
DOCKERFILE = os.path.join(DOCKER_DIR, "Dockerfile")
COMPOSE = os.path.join(DOCKER_DIR, "compose.yaml")
DOCKERIGNORE = DOCKERFILE + ".dockerignore"
DEBIAN_12 = re.compile(r"^(docker\.io/)?(library/)?debian:(12|bookworm)([.-][\w.-]*)?(@sha256:[0-9a-f]{64})?$")


# --------------------------------------------------------------------------
# a small Dockerfile parser


class Instr:
    def __init__(self, keyword, args, line):
        self.keyword, self.args, self.line = keyword, args, line

    def exec_form(self):
        """The JSON array of an exec-form instruction, else None."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(.*)$", text)
            text = m.group(1) if m else ""
        try:
            v = json.loads(text)
        except ValueError:
            return None
        return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None

    def __repr__(self):
        return "line %d: %s %s" % (self.line, self.keyword, self.args)


class Stage:
    def __init__(self, index, image, name):
        self.index, self.image, self.name = index, image, name
        self.instrs = []

    def all(self, keyword):
        return [i for i in self.instrs if i.keyword == keyword]

    def workdir(self, upto=None):
        """The WORKDIR in force at instruction `upto` (default: the end)."""
        wd = "/"
        for i in self.instrs:
            if i is upto:
                break
            if i.keyword == "WORKDIR":
                wd = os.path.normpath(os.path.join(wd, i.args))
        return wd


def parse_dockerfile(path):
    instrs, buf, start = [], "", None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for n, raw in enumerate(lines, 1):
        s = raw.strip()
        if s.startswith("#") or (not s and not buf):
            continue
        if start is None:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        kw, _, rest = buf.partition(" ")
        instrs.append(Instr(kw.upper(), rest.strip(), start))
        buf, start = "", None
    assert not buf, "Dockerfile ends inside a continued line"
    stages = []
    for i in instrs:
        if i.keyword == "FROM":
            parts = i.args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            stages.append(Stage(len(stages), parts[0], name))
        else:
            assert stages or i.keyword == "ARG", "%r before the first FROM" % i
            if stages:
                stages[-1].instrs.append(i)
    return stages


def copy_parts(instr):
    """(flags dict, [sources], dest) of a COPY/ADD."""
    v = instr.exec_form()
    words = v if v is not None else shlex.split(instr.args)
    flags = {}
    while words and words[0].startswith("--"):
        k, _, val = words.pop(0)[2:].partition("=")
        flags[k] = val
    assert len(words) >= 2, "%r: needs a source and a destination" % instr
    return flags, words[:-1], words[-1]


def copy_dest(stage, instr, src, dest):
    """Where src lands in the image (a trailing / means 'into the
    directory')."""
    base = dest if dest.startswith("/") else os.path.join(stage.workdir(instr), dest)
    if dest.endswith("/"):
        return os.path.normpath(os.path.join(base, os.path.basename(src.rstrip("/"))))
    return os.path.normpath(base)


def dockerignore_patterns():
    if not os.path.exists(DOCKERIGNORE):
        return []
    with open(DOCKERIGNORE, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]


def ignored(path, patterns):
    """True when the .dockerignore drops path (or a parent of it)."""
    parts = os.path.normpath(path).split("/")
    for k in range(1, len(parts) + 1):
        prefix = "/".join(parts[:k])
        for p in patterns:
            if p.startswith("!"):
                continue
            if fnmatch.fnmatchcase(prefix, p) or (p.startswith("**/") and fnmatch.fnmatchcase(parts[k - 1], p[3:])):
                return True
    return False


def git_mode(path):
    r = subprocess.run(["git", "-C", ROOT, "ls-files", "-s", "--", path], capture_output=True, text=True)
    return r.stdout.split()[0] if r.returncode == 0 and r.stdout.strip() else None


@pytest.fixture(scope="module")
def stages():
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def compose():
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def final_stage(stages):
    return stages[-1]


def build_stage(stages):
    """The stage whose RUN lines call scripts/build.sh."""
    found = [s for s in stages if any("scripts/build.sh" in r.args for r in s.all("RUN"))]
    assert len(found) == 1, "expected exactly one stage running scripts/build.sh, found %d" % len(found)
    return found[0]


def stage_named(stages, name):
    for s in stages:
        if s.name == name or str(s.index) == name:
            return s
    return None


# --------------------------------------------------------------------------
# Dockerfile


def test_every_copy_source_exists_and_is_in_the_context(stages):
    patterns = dockerignore_patterns()
    problems = []
    for s in stages:
        for c in s.all("COPY") + s.all("ADD"):
            flags, srcs, _ = copy_parts(c)
            if "from" in flags:
                if stage_named(stages, flags["from"]) is None:
                    problems.append("%r: no stage %r" % (c, flags["from"]))
                continue
            for src in srcs:
                if re.match(r"^[a-z]+://", src):
                    problems.append("%r: downloads %s at build time" % (c, src))
                    continue
                if not os.path.exists(os.path.join(ROOT, src)):
                    problems.append("%r: %s does not exist in the repository" % (c, src))
                elif ignored(src, patterns):
                    problems.append("%r: %s is excluded by %s" % (c, src, os.path.basename(DOCKERIGNORE)))
    assert not problems, "\n".join(problems)


def test_base_images_are_debian_12(stages):
    names = set()
    for s in stages:
        assert DEBIAN_12.match(s.image) or s.image in names, \
            "stage %d is FROM %r: not Debian 12 (debian:12-slim, debian:bookworm...)" % (s.index, s.image)
        if s.name:
            names.add(s.name)


def test_build_stage_runs_the_test_commands_scripts(stages):
    b = build_stage(stages)
    runs = " && ".join(r.args for r in b.all("RUN"))
    for script in ("scripts/deps.sh", "scripts/build.sh"):
        assert re.search(r"(^|[\s;&|])(\./)?%s\b" % re.escape(script), runs), \
            "the build stage does not run %s: %s" % (script, runs)
        assert os.access(os.path.join(ROOT, script), os.X_OK), "%s is not executable" % script
        assert git_mode(script) == "100755", "%s is not committed as executable (mode %s)" % (
            script, git_mode(script))
    copied = [src for c in b.all("COPY") for src in copy_parts(c)[1]]
    assert "scripts" in copied or all(s in copied for s in ("scripts/deps.sh", "scripts/build.sh")), \
        "the build stage runs scripts it does not COPY: %r" % copied
    # -D options handed to the build must exist in CMakeLists.txt
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        cmake = f.read()
    for opt in re.findall(r"-D(\w+)=", runs):
        assert opt.startswith("CMAKE_") or re.search(r"option\(\s*%s\b" % opt, cmake), \
            "the Dockerfile passes -D%s, which CMakeLists.txt does not define" % opt


def test_test_command_builds_through_the_same_script():
    """One source of truth: scripts/test.sh builds with scripts/build.sh
    (and installs with scripts/deps.sh), as the Dockerfile does."""
    with open(os.path.join(ROOT, "scripts", "test.sh"), encoding="utf-8") as f:
        code = [ln.split("#", 1)[0] for ln in f]
    text = "\n".join(code)
    for script in ("scripts/deps.sh", "scripts/build.sh"):
        assert re.search(r"(^|[\s;&|(])(\./)?%s\b" % re.escape(script), text), \
            "scripts/test.sh does not call %s: the image and the tests would build differently" % script
    assert not re.search(r"^\s*cmake\s+--build\b", text, re.M), \
        "scripts/test.sh calls cmake --build itself instead of scripts/build.sh"


def test_final_stage_user_entrypoint_healthcheck(stages):
    f = final_stage(stages)
    users = f.all("USER")
    assert users, "the runtime stage has no USER: the daemon would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), "the runtime stage runs as %r" % user
    created = " ".join(r.args for r in f.all("RUN"))
    assert user.isdigit() or re.search(r"\b(useradd|adduser)\b[^&;]*\b%s\b" % re.escape(user), created), \
        "USER %s is never created in the runtime stage" % user

    # ENTRYPOINT in exec form, naming the daemon that was copied in: it is
    # PID 1 and gets docker stop's SIGTERM itself
    eps = f.all("ENTRYPOINT")
    assert eps, "no ENTRYPOINT"
    ep = eps[-1].exec_form()
    assert ep, "ENTRYPOINT %r is in shell form: /bin/sh would be PID 1 and swallow SIGTERM" % eps[-1].args
    assert os.path.basename(ep[0]) == "comfy2mqtt", "ENTRYPOINT runs %r, not the daemon" % ep[0]
    assert ep[0] not in ("/bin/sh", "sh", "tini", "dumb-init")
    dests = {}
    for c in f.all("COPY"):
        flags, srcs, dest = copy_parts(c)
        for src in srcs:
            dests[copy_dest(f, c, src, dest)] = (flags.get("from"), src)
    assert ep[0] in dests, "ENTRYPOINT %s is not a file this stage COPYs (copied: %s)" % (ep[0], sorted(dests))
    signals = f.all("STOPSIGNAL")
    assert not signals or signals[-1].args in ("SIGTERM", "15"), "STOPSIGNAL %s" % signals[-1].args

    hcs = f.all("HEALTHCHECK")
    assert hcs, "no HEALTHCHECK"
    hc = hcs[-1].exec_form()
    assert hc, "HEALTHCHECK %r: use the exec form CMD [...]" % hcs[-1].args
    assert hc[0] in dests, "HEALTHCHECK runs %s, which the runtime stage does not COPY" % hc[0]
    origin, src = dests[hc[0]]
    assert origin is None and os.path.isfile(os.path.join(ROOT, src)), hc
    assert git_mode(src) == "100755", "%s must be committed executable (COPY keeps the mode)" % src
    assert not re.search(r"/proc/1\b.*cmdline", hcs[-1].args), "a HEALTHCHECK that only looks at /proc/1 says nothing"


def test_build_stage_replayed_from_copied_files_only(stages, tmp_path):
    """Runs the build stage the way Docker would, minus the container:
    only the COPYd files, its WORKDIR, its RUN lines with /bin/sh -c. Then
    the runtime stage's COPY --from finds the binary, and the packages it
    installs provide every library the binary links."""
    b = build_stage(stages)
    root = tmp_path / "image"

    def host(path):
        return str(root) + os.path.normpath("/" + path)

    os.makedirs(host(b.workdir()), exist_ok=True)
    workdir = "/"
    for i in b.instrs:
        if i.keyword == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, i.args))
            os.makedirs(host(workdir), exist_ok=True)
        elif i.keyword == "COPY":
            flags, srcs, dest = copy_parts(i)
            assert "from" not in flags, "the build stage copies from another stage: %r" % i
            for src in srcs:
                target = dest if dest.startswith("/") else os.path.join(workdir, dest)
                target = host(target)
                s = os.path.join(ROOT, src)
                if os.path.isdir(s):
                    if dest.endswith("/") or dest in (".", "./"):
                        target = os.path.join(target, os.path.basename(src)) if dest not in (".", "./") else target
                    shutil.copytree(s, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    if dest.endswith("/") or os.path.isdir(target):
                        os.makedirs(target, exist_ok=True)
                        target = os.path.join(target, os.path.basename(src))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(s, target)
        elif i.keyword == "RUN":
            r = subprocess.run(["/bin/sh", "-c", i.args], cwd=host(workdir), capture_output=True,
                               timeout=600, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, "%r failed (%d):\n%s\n%s" % (
                i, r.returncode, r.stdout.decode(errors="replace")[-3000:], r.stderr.decode(errors="replace")[-3000:])

    f = final_stage(stages)
    binaries = [(copy_parts(c)[1][0], copy_parts(c)[2]) for c in f.all("COPY")
                if copy_parts(c)[0].get("from") in (b.name, str(b.index))]
    assert binaries, "the runtime stage copies nothing from the build stage"
    for src, _ in binaries:
        assert os.path.isfile(host(src)), "COPY --from=%s %s: the build stage did not produce it" % (b.name, src)
    daemon = host(binaries[0][0])
    v = subprocess.run([daemon, "--version"], capture_output=True, timeout=10)
    assert v.returncode == 0 and v.stdout.startswith(b"comfy2mqtt "), v

    # every library the binary links comes from a package the runtime
    # stage installs, or one those depend on, or an essential one
    installed = set()
    for r in f.all("RUN"):
        for m in re.finditer(r"apt-get\s+install\s+((?:-\S+\s+)*)([^&;|]+)", r.args):
            installed.update(w for w in m.group(2).split() if not w.startswith("-"))
    provided = set(installed)
    for p in installed:
        deps = dpkg_field(p, "Depends") + "," + dpkg_field(p, "Pre-Depends")
        provided.update(d.split()[0].split(":")[0] for d in re.split(r"[,|]", deps) if d.strip())
    elf = subprocess.run(["readelf", "-d", daemon], capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.+?)\]", elf)
    assert needed, "readelf found no NEEDED entries"
    missing = []
    for lib in needed:
        owner = subprocess.run(["dpkg", "-S", "*/" + lib], capture_output=True, text=True).stdout
        pkgs = {ln.split(":")[0] for ln in owner.splitlines() if ln.strip()}
        assert pkgs, "no package owns %s" % lib
        essential = any(dpkg_field(p, "Essential") == "yes" for p in pkgs)
        if not (pkgs & provided) and not essential:
            missing.append("%s (package %s)" % (lib, ", ".join(sorted(pkgs))))
    assert not missing, "the runtime stage does not install: %s (installs %s)" % (missing, sorted(installed))


def dpkg_field(package, field):
    r = subprocess.run(["dpkg-query", "-W", "-f=${%s}" % field, package], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def test_dockerfile_shell_scripts_parse():
    for script, shell in (("docker/healthcheck.sh", "/bin/sh"), ("scripts/build.sh", "bash"),
                          ("scripts/deps.sh", "bash")):
        r = subprocess.run([shell, "-n", os.path.join(ROOT, script)], capture_output=True, text=True)
        assert r.returncode == 0, "%s: %s" % (script, r.stderr)


# --------------------------------------------------------------------------
# the healthcheck, against a real daemon


def run_healthcheck(pid, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("COMFY2MQTT_")}
    e.update(env or {})
    e["C2M_HEALTH_PID"] = str(pid)
    return subprocess.run(["/bin/sh", os.path.join(DOCKER_DIR, "healthcheck.sh")], capture_output=True,
                          text=True, env=e, timeout=10)


def test_healthcheck_follows_the_broker_link(broker, collector, make_bridge):
    bridge = make_bridge("http://127.0.0.1:9", broker.url)
    got = harness.wait_until(lambda: run_healthcheck(bridge.proc.pid).returncode == 0, 15, interval=0.2)
    r = run_healthcheck(bridge.proc.pid)
    assert got, "healthcheck unhealthy while the bridge is connected: %r%s" % (r.stdout, bridge.context())
    assert "%d" % broker.port in r.stdout

    broker.stop()
    down = harness.wait_until(lambda: run_healthcheck(bridge.proc.pid).returncode == 1, 15, interval=0.2)
    r = run_healthcheck(bridge.proc.pid)
    assert down, "healthcheck still healthy with the broker gone: %r" % r.stdout
    assert "no established connection" in r.stdout, r.stdout
    assert bridge.alive()

    broker.start()
    back = harness.wait_until(lambda: run_healthcheck(bridge.proc.pid).returncode == 0, 40, interval=0.2)
    assert back, "healthcheck did not recover after the broker came back%s" % bridge.context()


def test_healthcheck_rejects_other_processes(broker):
    r = run_healthcheck(broker.proc.pid, env={"COMFY2MQTT_MQTT": broker.url})
    assert r.returncode == 1 and "not comfy2mqtt" in r.stdout, r
    dead = subprocess.Popen(["true"])
    dead.wait()
    r = run_healthcheck(dead.pid)
    assert r.returncode == 1 and "no process" in r.stdout, r


# --------------------------------------------------------------------------
# compose


def services_of(compose):
    s = compose.get("services")
    assert isinstance(s, dict) and s, "compose.yaml has no services"
    return s


def build_of(svc):
    b = svc.get("build")
    if b is None:
        return None
    if isinstance(b, str):
        b = {"context": b}
    context = os.path.normpath(os.path.join(DOCKER_DIR, b.get("context", ".")))
    dockerfile = os.path.normpath(os.path.join(context, b.get("dockerfile", "Dockerfile")))
    return context, dockerfile, b.get("target")


def bridge_service(compose, stages):
    found = []
    for name, svc in services_of(compose).items():
        b = build_of(svc)
        if b and b[1] == DOCKERFILE and (b[2] is None or b[2] == final_stage(stages).name):
            found.append(name)
    assert len(found) == 1, "expected one service building the runtime image of docker/Dockerfile, got %r" % found
    return found[0]


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return env


def test_compose_builds_and_references_existing_files(compose):
    problems = []
    for name, svc in services_of(compose).items():
        b = build_of(svc)
        if b:
            context, dockerfile, _ = b
            if context != os.path.normpath(ROOT):
                problems.append("%s: build context %s is not the repository root" % (name, context))
            if not os.path.isfile(dockerfile):
                problems.append("%s: %s does not exist" % (name, dockerfile))
        elif "image" not in svc:
            problems.append("%s: neither build nor image" % name)
        for v in svc.get("volumes") or []:
            src = v.get("source") if isinstance(v, dict) else v.split(":")[0]
            if src and (src.startswith(".") or src.startswith("/")):
                path = os.path.normpath(os.path.join(DOCKER_DIR, src))
                if not os.path.exists(path):
                    problems.append("%s: volume source %s does not exist" % (name, src))
        for f in svc.get("env_file") or []:
            if not os.path.exists(os.path.join(DOCKER_DIR, f)):
                problems.append("%s: env_file %s does not exist" % (name, f))
    assert not problems, "\n".join(problems)


def test_compose_has_mosquitto_and_the_bridge_as_pid_1(compose, stages):
    services = services_of(compose)
    brokers = [n for n, s in services.items() if "mosquitto" in str(s.get("image", ""))]
    assert brokers, "no mosquitto service"
    broker = brokers[0]
    assert not services[broker].get("profiles"), "the broker must start by default, not only in a profile"
    name = bridge_service(compose, stages)
    svc = services[name]
    assert not svc.get("profiles"), "the bridge must start by default"
    assert svc.get("init") is not True, "init: true puts an init process in front of the daemon as PID 1"
    assert "entrypoint" not in svc, "the bridge service must keep the image's exec-form ENTRYPOINT"
    assert svc.get("stop_signal", "SIGTERM") == "SIGTERM"
    env = env_of(svc)
    url = env.get("COMFY2MQTT_MQTT", "")
    assert re.match(r"^mqtts?://%s(:\d+)?/?$" % re.escape(broker), url), \
        "COMFY2MQTT_MQTT=%r should name the %s service" % (url, broker)
    deps = svc.get("depends_on") or []
    assert broker in deps, "the bridge should depend on %s" % broker
    assert "COMFY2MQTT_COMFYUI" in env, "the bridge needs a ComfyUI URL"
    secrets = [k for k, v in env.items() if re.search(r"PASSWORD$", k) and v]
    assert not secrets, "compose.yaml holds a literal password in %s: use a *_FILE or a secret" % secrets


def test_compose_simulator_is_an_optional_demo(compose, stages):
    services = services_of(compose)
    sims = [n for n, s in services.items()
            if "comfyui_sim.py" in json.dumps(s.get("command", "")) + json.dumps(s.get("entrypoint", ""))]
    assert len(sims) == 1, "expected one simulator service, got %r" % sims
    svc = services[sims[0]]
    assert svc.get("profiles"), "the simulator must be optional (a profile), not start by default"

    # map container paths back to the repository: the stage's COPYs and bind mounts
    mapping = []
    b = build_of(svc)
    if b:
        stage = stage_named(stages, b[2]) if b[2] else final_stage(stages)
        assert stage is not None, "build target %r is not a stage of the Dockerfile" % b[2]
        for c in stage.all("COPY"):
            flags, srcs, dest = copy_parts(c)
            if "from" not in flags:
                for src in srcs:
                    mapping.append((copy_dest(stage, c, src, dest), os.path.join(ROOT, src)))
    for v in svc.get("volumes") or []:
        src, dst = (v.get("source"), v.get("target")) if isinstance(v, dict) else v.split(":")[:2]
        mapping.append((os.path.normpath(dst), os.path.normpath(os.path.join(DOCKER_DIR, src))))

    cmd = svc["command"]
    words = cmd if isinstance(cmd, list) else shlex.split(cmd)
    files = [w for w in words if re.search(r"\.(py|sh)$", w)]
    assert files, "the simulator command names no script: %r" % words
    for w in files:
        resolved = None
        for dst, src in sorted(mapping, key=lambda m: -len(m[0])):
            if w == dst or w.startswith(dst + "/"):
                resolved = src + w[len(dst):]
                break
        assert resolved, "%s is neither copied into the image nor mounted (known: %r)" % (w, mapping)
        assert os.path.isfile(resolved), "%s maps to %s, which does not exist" % (w, resolved)
    # the simulator's default traces directory must be there too
    assert any(os.path.normpath(src) == os.path.join(ROOT, "tests", "data", "traces") for _, src in mapping), \
        "the simulator service lacks tests/data/traces (replays need it)"


# --------------------------------------------------------------------------
# the farm example: two simulated servers, one bridge (README "A GPU farm in
# one process")

COMPOSE_FARM = os.path.join(DOCKER_DIR, "compose.farm.yaml")


def test_farm_compose_follows_two_simulated_servers(stages):
    with open(COMPOSE_FARM, encoding="utf-8") as f:
        farm = yaml.safe_load(f)
    services = services_of(farm)
    name = bridge_service(farm, stages)
    svc = services[name]
    assert svc.get("init") is not True and "entrypoint" not in svc
    env = env_of(svc)
    assert re.match(r"^mqtt://mosquitto(:\d+)?$", env.get("COMFY2MQTT_MQTT", "")), env
    sims = {}
    for n, s in services.items():
        b = build_of(s)
        if b and b[2] == "sim":
            stage = stage_named(stages, "sim")
            assert stage is not None and s.get("image"), n
            words = s["command"]
            assert "--port" in words and "--host" in words and "0.0.0.0" in words, (n, words)
            sims[n] = words[words.index("--port") + 1]
    assert len(sims) == 2, "expected two simulator services, got %r" % sorted(sims)
    # the bridge's comma list names each simulator service at its port
    entries = env["COMFY2MQTT_COMFYUI"].split(",")
    targets = {}
    for e in entries:
        m = re.match(r"^([A-Za-z0-9_-]+)=http://([a-z0-9-]+):(\d+)$", e)
        assert m, "COMFY2MQTT_COMFYUI entry %r is not INSTANCE=http://service:port" % e
        targets[m.group(2)] = m.group(3)
    assert targets == sims, "the bridge follows %r, the simulators listen on %r" % (targets, sims)
    assert set(sims) <= set(svc.get("depends_on") or []) and "mosquitto" in svc["depends_on"]
    # the daemon's own parser takes the list: the environment is applied
    # before the flags, so the error names the bad flag, not the list
    r = harness.run_bridge_once(["--state-ttl", "x"], env={"COMFY2MQTT_COMFYUI": env["COMFY2MQTT_COMFYUI"]})
    assert r.returncode == 64 and r.stderr.startswith(b"comfy2mqtt: --state-ttl:"), r
    r = harness.run_bridge_once(["--comfyui", entries[0], "--comfyui", entries[0]])
    assert r.returncode == 64, r
