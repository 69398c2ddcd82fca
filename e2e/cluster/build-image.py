#!/usr/bin/env python3
"""Assemble the UnisonDB runtime image (the Dockerfile's `runtime` stage) from prebuilt release binaries,
without a Docker engine: one layer, written as a docker-archive for `ctr image import`.
usage: build-image.py BIN_DIR OUT.tar TAG [TAG...]
BIN_DIR holds `unisondb` and `unisondb-operator` (target/release). The rootfs is a minimal Debian-like
tree: the binaries, docker/entrypoint.sh, Debian's tini (as in the Dockerfile), dash as /bin/sh, the glibc
shared libraries the binaries need (found with ldd on this bookworm host, the Dockerfile's base
release), CA certificates, /etc/passwd with user unisondb (65532), /var/lib/unisondb owned by 65532.
The image config below is this script's definition of the runtime stage; e2e/tests/cluster_e2e.rs
checks it against the Dockerfile (user, env, ports, volume, workdir, entrypoint, cmd, labels)."""
import hashlib, io, json, os, subprocess, sys, tarfile, time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSION = os.environ.get("IMAGE_VERSION", "0.1.0")

IMAGE_CONFIG = {
    "User": "65532:65532",
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "UNISONDB_SERVER_DATA_DIR=/var/lib/unisondb", "RUST_LOG=info"],
    "WorkingDir": "/var/lib/unisondb",
    "Volumes": {"/var/lib/unisondb": {}},
    "ExposedPorts": {"4000/tcp": {}, "4001/tcp": {}, "4002/tcp": {}},
    "Entrypoint": ["/usr/bin/tini", "--", "/usr/local/bin/docker-entrypoint.sh"],
    "Cmd": ["unisondb", "server", "--mode", "replicator"],
    "Labels": {
        "org.opencontainers.image.title": "unisondb",
        "org.opencontainers.image.description": "UnisonDB node (unisondb) and Kubernetes operator (unisondb-operator)",
        "org.opencontainers.image.source": "https://github.com/unisondb/unisondb-rs",
        "org.opencontainers.image.url": "https://github.com/unisondb/unisondb-rs",
        "org.opencontainers.image.documentation": "https://github.com/unisondb/unisondb-rs/blob/main/docs/KUBERNETES.md",
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.vendor": "UnisonDB",
        "org.opencontainers.image.version": VERSION,
        "org.opencontainers.image.revision": os.environ.get("IMAGE_REVISION", "unknown"),
    },
}


def die(msg):
    print("build-image.py: " + msg, file=sys.stderr)
    sys.exit(2)


def ldd_deps(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    if out.returncode != 0:
        if "not a dynamic executable" in out.stdout + out.stderr:
            return []
        die(f"ldd {path}: {out.stderr.strip()}")
    deps = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            die(f"{path}: missing shared library: {line}")
        if "=>" in line:
            p = line.split("=>", 1)[1].split("(")[0].strip()
        else:
            p = line.split("(")[0].strip()
        if p.startswith("/"):
            deps.append(p)
    return deps


def main():
    if len(sys.argv) < 4:
        die(__doc__)
    bin_dir, out, tags = sys.argv[1], sys.argv[2], sys.argv[3:]
    files = {  # path in image -> (host path, mode)
        "usr/local/bin/unisondb": (os.path.join(bin_dir, "unisondb"), 0o755),
        "usr/local/bin/unisondb-operator": (os.path.join(bin_dir, "unisondb-operator"), 0o755),
        "usr/local/bin/docker-entrypoint.sh": (os.path.join(REPO, "docker/entrypoint.sh"), 0o755),
        "usr/bin/tini": ("/usr/bin/tini", 0o755),
        "bin/dash": ("/bin/dash", 0o755),
        "etc/ssl/certs/ca-certificates.crt": ("/etc/ssl/certs/ca-certificates.crt", 0o644),
    }
    for p, (hp, _) in files.items():
        if not os.path.isfile(hp):
            hint = "build the release binaries (scripts/build-release.sh)" if "bin" in p and "local" in p \
                else "run e2e/cluster/install-deps.sh"
            die(f"{hp} missing (for /{p}): {hint}")
    for p, (hp, _) in list(files.items()):
        if p.endswith(".sh") or p.endswith(".crt"):
            continue
        for dep in ldd_deps(hp):
            files.setdefault(dep.lstrip("/"), (os.path.realpath(dep), 0o755))
    links = {"bin/sh": "dash"}
    passwd = ("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
              "unisondb:x:65532:65532::/var/lib/unisondb:/usr/sbin/nologin\n").encode()
    group = b"root:x:0:\nnogroup:x:65534:\nunisondb:x:65532:\n"
    owned_dirs = {"var/lib/unisondb": (65532, 65532, 0o755)}

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        seen = set()

        def adddir(d, uid=0, gid=0, mode=0o755):
            d = d.strip("/")
            if not d or d in seen:
                return
            adddir(os.path.dirname(d))
            ti = tarfile.TarInfo(d); ti.type = tarfile.DIRTYPE; ti.mtime = 0
            ti.mode = 0o1777 if d == "tmp" else mode; ti.uid, ti.gid = uid, gid
            t.addfile(ti); seen.add(d)

        for d in ("tmp", "etc/unisondb", "proc", "sys", "dev", "run", "var/run", "root"):
            adddir(d)
        for d, (uid, gid, mode) in owned_dirs.items():
            adddir(d, uid, gid, mode)
        for p in sorted(files):
            hp, mode = files[p]
            adddir(os.path.dirname(p))
            data = open(hp, "rb").read()
            ti = tarfile.TarInfo(p); ti.size = len(data); ti.mode = mode; ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
        for p, tgt in links.items():
            adddir(os.path.dirname(p))
            ti = tarfile.TarInfo(p); ti.type = tarfile.SYMTYPE; ti.linkname = tgt; ti.mtime = 0
            t.addfile(ti)
        for name, data in (("etc/passwd", passwd), ("etc/group", group)):
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644; ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64", "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": IMAGE_CONFIG,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "e2e/cluster/build-image.py"}],
    }
    cfg_bytes = json.dumps(config, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    layer_name = diff_id[7:] + "/layer.tar"
    with tarfile.open(out, "w") as t:
        def add(name, data):
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644; ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
        add(cfg_name, cfg_bytes)
        add(layer_name, layer_bytes)
        add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": tags, "Layers": [layer_name]}]).encode())
        repos = {}
        for ref in tags:
            repo, tag = ref.rsplit(":", 1)
            repos.setdefault(repo, {})[tag] = diff_id[7:]
        add("repositories", json.dumps(repos).encode())
    print(out, " ".join(tags), diff_id, len(layer_bytes), "files:", len(files))


if __name__ == "__main__":
    main()
