//! The release artifacts of docs/release.md, built and inspected with the real tools:
//! the image `scripts/image.sh` builds without a daemon (buildah: a static binary on
//! scratch, as an OCI archive), the chart `helm package` makes, and the kubectl plugin
//! that krew installs from the manifest and archive `scripts/krew-plugin.sh` makes.
//!
//! The publishing commands (`skopeo copy`, `helm push`) run against an in-memory OCI
//! registry on loopback, not ghcr.io: logging in to ghcr.io, the GitHub release the
//! plugin's archive is downloaded from and the krew-index pull request are not tested.
//!
//! helm, kubectl, krew (`kubectl-krew`), validate-krew-manifest and the registry
//! (`ggcr-registry`) come from `.tools/bin`, buildah, skopeo and file from the system
//! (`scripts/install-tools.sh` installs them all; `scripts/test.sh` runs it).
//! The image's static build goes to `<target>/static` (a cold build takes about 4
//! minutes on 2 cores; later runs rebuild blastguard alone).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::chart::helm_template;
use common::registry::Registry;
use common::{repo, tool, tool_with};
use serde_json::Value;
use sha2::Digest as _;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The target directory of this build (`CARGO_TARGET_TMPDIR` is its `tmp`): the image's
/// static build goes under it, beside the normal build, never in a new one.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
        .to_path_buf()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the command; fails the test with its output unless it succeeds.
fn succeed(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    text(&succeed(cmd).stdout)
}

/// What `scripts/image.sh` made: the OCI archive, and the static binary it put in it.
struct Image {
    archive: PathBuf,
    binary: PathBuf,
    seconds: u64,
}

/// Runs `scripts/image.sh` once per test binary; the image and the krew tests share
/// its static binary (the second waits for the first).
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let archive = Path::new(env!("CARGO_TARGET_TMPDIR")).join("release/blastguard.oci.tar");
        let start = Instant::now();
        let out = succeed(
            tool("bash")
                .arg(repo().join("scripts/image.sh"))
                .arg(&archive)
                .env("CARGO_TARGET_DIR", target_dir())
                .stderr(Stdio::inherit()),
        );
        let printed = text(&out.stdout);
        assert_eq!(
            printed.trim(),
            archive.to_str().unwrap(),
            "the script prints the archive"
        );
        Image {
            archive,
            binary: target_dir().join("static/x86_64-unknown-linux-gnu/release/blastguard"),
            seconds: start.elapsed().as_secs(),
        }
    })
}

/// A blob of an OCI layout by its `sha256:` digest, checked against that digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digests");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        hex,
        "blob {digest}"
    );
    bytes
}

/// The commit the build names: HEAD, `-dirty` when tracked files have changes.
fn head_commit() -> String {
    let head = stdout(
        Command::new("git")
            .arg("-C")
            .arg(repo())
            .args(["rev-parse", "HEAD"]),
    );
    let dirty = !stdout(Command::new("git").arg("-C").arg(repo()).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .trim()
    .is_empty();
    format!("{}{}", head.trim(), if dirty { "-dirty" } else { "" })
}

/// Runs `args` with `root` as the file system root, as a container runtime would: in a
/// user namespace (no privilege needed), with a PID namespace and its own /proc mounted
/// (every runtime mounts one; the process metrics read it), and nothing else: the binary
/// finds no library, no /etc, no /tmp. `--kill-child`: killing unshare ends the child.
fn in_root(root: &Path, args: &[&str]) -> Command {
    std::fs::create_dir_all(root.join("proc")).unwrap();
    let mut cmd = tool("unshare");
    cmd.args([
        "--map-root-user",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc=/proc",
    ])
    .arg(format!("--root={}", root.display()));
    cmd.args(args);
    cmd
}

/// A plain HTTP/1.1 GET (the admin port speaks cleartext), the body as text.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

#[test]
fn image_is_a_static_blastguard_alone_on_scratch_that_serves() {
    let image = image();
    eprintln!("scripts/image.sh took {} s", image.seconds);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let layout = dir.path().join("oci");
    std::fs::create_dir(&layout).unwrap();
    succeed(
        tool("tar")
            .arg("-xf")
            .arg(&image.archive)
            .arg("-C")
            .arg(&layout),
    );

    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        format!("ghcr.io/blastguard/blastguard:{VERSION}"),
        "the archive names the chart's image repository (values.yaml image.repository)"
    );
    let manifest: Value =
        serde_json::from_slice(&blob(&layout, manifests[0]["digest"].as_str().unwrap())).unwrap();
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();

    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let c = &config["config"];
    // The chart's securityContext runs as 65532 (runAsNonRoot); the image says the same.
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/blastguard"]));
    assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
    let ports: Vec<&String> = c["ExposedPorts"].as_object().unwrap().keys().collect();
    assert_eq!(ports, ["8080/tcp", "8443/tcp"]);
    assert!(
        c["Env"].is_null()
            || c["Env"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e.as_str().unwrap().starts_with("PATH="))
    );
    let labels: BTreeMap<String, String> = serde_json::from_value(c["Labels"].clone()).unwrap();
    let commit = head_commit();
    for (key, want) in [
        (
            "org.opencontainers.image.source",
            "https://github.com/blastguard/blastguard",
        ),
        ("org.opencontainers.image.version", VERSION),
        ("org.opencontainers.image.revision", commit.as_str()),
    ] {
        assert_eq!(
            labels.get(key).map(String::as_str),
            Some(want),
            "{key} in {labels:?}"
        );
    }

    // One gzip layer holding one file: the binary, executable, nothing else.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = dir.path().join("layer.tar.gz");
    std::fs::write(&layer, blob(&layout, layers[0]["digest"].as_str().unwrap())).unwrap();
    let listing = stdout(tool("tar").arg("-tzvf").arg(&layer));
    let entries: Vec<&str> = listing.lines().collect();
    assert_eq!(entries.len(), 1, "{listing}");
    assert!(entries[0].starts_with("-rwxr-xr-x 0/0"), "{listing}");
    assert!(entries[0].ends_with(" blastguard"), "{listing}");
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    succeed(tool("tar").arg("-xzf").arg(&layer).arg("-C").arg(&root));
    std::fs::remove_dir_all(&layout).unwrap();
    std::fs::remove_file(&layer).unwrap();
    let described = stdout(tool("file").arg("-b").arg(root.join("blastguard")));
    assert!(
        described.contains("static"),
        "not statically linked: {described}"
    );

    // It runs with nothing else around it: no libc, no /etc, no /tmp.
    let version = stdout(&mut in_root(&root, &["/blastguard", "--version"]));
    assert_eq!(version.trim(), format!("blastguard {VERSION}"));

    // And serves: TLS from files, the embedded policy, build_info naming the commit.
    let pki = common::Pki::new();
    let leaf = pki.leaf(1, 2030);
    std::fs::write(root.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(root.join("tls.key"), &leaf.key_pem).unwrap();
    let mut serve = Running(
        in_root(
            &root,
            &[
                "/blastguard",
                "serve",
                "--tls-cert",
                "/tls.crt",
                "--tls-key",
                "/tls.key",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let mut admin = None;
    for line in BufReader::new(serve.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("admin listening on http://").nth(1) {
            admin = Some(rest.split(['/', ' ']).next().unwrap().to_string());
            break;
        }
    }
    let admin = admin.expect("serve printed its admin address");
    let metrics = http_get(&admin, "/metrics");
    let want = format!("blastguard_build_info{{commit=\"{commit}\",version=\"{VERSION}\"}} 1");
    assert!(metrics.contains(&want), "{want} in\n{metrics}");
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "{metrics}"
    );
}

/// A process run by [`in_root`], killed when dropped, also when an assertion fails.
/// SIGKILL: unshare ignores SIGTERM while it waits for its child; `--kill-child` then
/// ends the server.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `helm package charts/blastguard` into `dest`; the archive's path.
fn helm_package(dest: &Path) -> PathBuf {
    let out = stdout(
        tool("helm")
            .args(["package"])
            .arg(repo().join("charts/blastguard"))
            .arg("--destination")
            .arg(dest),
    );
    // The name `helm push` turns into oci://<registry>/<path>/blastguard:<version>.
    let archive = dest.join(format!("blastguard-{VERSION}.tgz"));
    assert!(out.contains(archive.to_str().unwrap()), "{out}");
    assert!(archive.is_file());
    archive
}

/// `helm template` of a chart (directory, .tgz or oci:// reference) into the namespace
/// blastguard-system, with `extra` arguments: what it printed.
fn rendered(chart: impl AsRef<std::ffi::OsStr>, extra: &[&str]) -> String {
    let out = helm_template(chart, "blastguard-system", "", extra);
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Renders deterministically: the default certificate mode makes a new CA on each
/// render, cert-manager mode leaves the certificates to cert-manager.
const CERT_MANAGER: [&str; 2] = ["--set", "certificates.mode=cert-manager"];

#[test]
fn helm_package_makes_the_versioned_archive_that_renders_like_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let archive = helm_package(dir.path());

    let chart: serde_yaml::Value =
        serde_yaml::from_str(&stdout(tool("helm").args(["show", "chart"]).arg(&archive))).unwrap();
    assert_eq!(chart["name"].as_str(), Some("blastguard"));
    assert_eq!(
        chart["version"].as_str(),
        Some(VERSION),
        "Chart.yaml version = Cargo.toml version"
    );
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(VERSION),
        "appVersion = Cargo.toml version"
    );

    // Everything under one top directory named for the chart, as helm pull expects.
    let listing = stdout(tool("tar").arg("-tzf").arg(&archive));
    for entry in listing.lines() {
        assert!(entry.starts_with("blastguard/"), "{entry}");
    }
    for needed in [
        "blastguard/Chart.yaml",
        "blastguard/values.yaml",
        "blastguard/values.schema.json",
    ] {
        assert!(
            listing.lines().any(|l| l == needed),
            "{needed} in\n{listing}"
        );
    }

    // The packaged chart renders exactly as the directory does: nothing was left out.
    // The defaults render too.
    assert_eq!(
        rendered(&archive, &CERT_MANAGER),
        rendered(repo().join("charts/blastguard"), &CERT_MANAGER),
        "helm template of the .tgz and of charts/blastguard differ"
    );
    let packaged = rendered(&archive, &[]);
    assert!(
        packaged.contains(&format!(
            "image: \"ghcr.io/blastguard/blastguard:{VERSION}\""
        )),
        "{packaged}"
    );
    assert!(
        packaged.contains("- name: validate.blastguard.io"),
        "{packaged}"
    );
}

#[test]
fn krew_installs_the_plugin_from_its_manifest_and_archive() {
    let dir = tempfile::tempdir().unwrap();
    let binary = &image().binary;
    let printed = stdout(
        tool("bash")
            .arg(repo().join("scripts/krew-plugin.sh"))
            .arg(binary)
            .arg(dir.path()),
    );
    let paths: Vec<&str> = printed.lines().collect();
    let name = format!("kubectl-blastguard_v{VERSION}_linux_amd64.tar.gz");
    let archive = dir.path().join(&name);
    let manifest_path = dir.path().join("blastguard.yaml");
    assert_eq!(
        paths,
        [archive.to_str().unwrap(), manifest_path.to_str().unwrap()]
    );

    let listing = stdout(tool("tar").arg("-tzf").arg(&archive));
    let mut want = vec!["blastguard"];
    if repo().join("LICENSE").is_file() {
        want.push("LICENSE");
    }
    assert_eq!(listing.lines().collect::<Vec<_>>(), want);

    // Packed reproducibly: the same binary, the same sha256, whenever it is packed.
    let again = tempfile::tempdir().unwrap();
    succeed(
        tool("bash")
            .arg(repo().join("scripts/krew-plugin.sh"))
            .arg(binary)
            .arg(again.path()),
    );
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(again.path().join(&name)).unwrap(),
        "two packings of one binary differ"
    );

    let manifest: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    assert_eq!(
        manifest["apiVersion"].as_str(),
        Some("krew.googlecontainertools.github.com/v1alpha2")
    );
    assert_eq!(manifest["kind"].as_str(), Some("Plugin"));
    assert_eq!(manifest["metadata"]["name"].as_str(), Some("blastguard"));
    let version = format!("v{VERSION}");
    assert_eq!(manifest["spec"]["version"].as_str(), Some(version.as_str()));
    let platform = &manifest["spec"]["platforms"][0];
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&archive).unwrap()));
    assert_eq!(platform["sha256"].as_str(), Some(sha.as_str()));
    assert_eq!(
        platform["uri"].as_str().map(String::from),
        Some(format!(
            "https://github.com/blastguard/blastguard/releases/download/{version}/{name}"
        ))
    );
    // krew-index's own check (its CI runs it on every pull request) accepts both the
    // release's manifest and the one in the repository. Its install step (-skip-install
    // here) downloads the uri and wants a LICENSE in the archive: docs/release.md.
    for path in [
        manifest_path.clone(),
        repo().join("plugins/krew/blastguard.yaml"),
    ] {
        succeed(
            tool("validate-krew-manifest")
                .arg("-manifest")
                .arg(&path)
                .arg("-skip-install"),
        );
    }
    // The manifest in the repository is the one released: its version follows Cargo.toml
    // (docs/release.md bumps it with the rest).
    let checked_in: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("plugins/krew/blastguard.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        checked_in["spec"]["version"].as_str(),
        Some(version.as_str())
    );

    // krew itself installs it: sha256 checked against the manifest, the binary linked
    // into KREW_ROOT/bin as kubectl-blastguard, and kubectl runs it from there.
    let krew_root = dir.path().join("krew");
    let krew_bin = krew_root.join("bin");
    let krew = |args: &[&str]| {
        let mut cmd = tool_with("kubectl", &[&krew_bin]);
        cmd.args(args)
            .env("KREW_ROOT", &krew_root)
            // No call to GitHub for a newer krew.
            .env("KREW_NO_UPGRADE_CHECK", "1");
        cmd
    };
    let install = succeed(
        krew(&[
            "krew",
            "install",
            &format!("--manifest={}", manifest_path.display()),
            &format!("--archive={}", archive.display()),
        ])
        .stdin(Stdio::null()),
    );
    let said = text(&install.stderr);
    assert!(said.contains("Installed plugin: blastguard"), "{said}");
    assert!(krew_bin.join("kubectl-blastguard").exists());
    // `krew list` and `uninstall` read the plugin index, which needs a git clone of
    // krew-index from GitHub; the receipt is what they would list.
    let receipt: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(krew_root.join("receipts/blastguard.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["spec"]["version"].as_str(), Some(version.as_str()));

    let version_line = stdout(&mut krew(&["blastguard", "--version"]));
    assert_eq!(version_line.trim(), format!("blastguard {VERSION}"));
    let help = stdout(&mut krew(&["blastguard", "--help"]));
    assert!(
        help.contains("kubectl blastguard"),
        "help names the plugin:\n{help}"
    );
}

/// The publishing commands of docs/release.md, against a registry on loopback instead
/// of ghcr.io (no credentials, plain HTTP): the image goes up with `skopeo copy` and
/// keeps its manifest digest, the chart with `helm push` and renders from the registry
/// as from the .tgz. Logging in to ghcr.io is the one untested step.
#[test]
fn image_and_chart_go_to_an_oci_registry_unchanged() {
    let image = image();
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();

    let index: Value = serde_json::from_str(&stdout(
        tool("tar")
            .arg("-xOf")
            .arg(&image.archive)
            .arg("index.json"),
    ))
    .unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let reference = format!("docker://{}/blastguard/blastguard:{VERSION}", registry.host);
    succeed(
        tool("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", image.archive.display()))
            .arg(&reference),
    );
    let inspected: Value = serde_json::from_str(&stdout(
        tool("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(&reference),
    ))
    .unwrap();
    assert_eq!(inspected["Digest"], digest.as_str(), "{inspected}");
    assert_eq!(
        inspected["Labels"]["org.opencontainers.image.version"],
        VERSION
    );

    // helm's registry config and cache in the temporary directory, not in $HOME.
    let helm = |args: &[&str]| {
        let mut cmd = tool("helm");
        cmd.args(args)
            .env("HELM_CONFIG_HOME", dir.path().join("config"))
            .env("HELM_CACHE_HOME", dir.path().join("cache"))
            .env("HELM_DATA_HOME", dir.path().join("data"));
        cmd
    };
    let archive = helm_package(dir.path());
    let pushed = succeed(&mut helm(&[
        "push",
        archive.to_str().unwrap(),
        &format!("oci://{}/blastguard/charts", registry.host),
        "--plain-http",
    ]));
    let said = format!("{}{}", text(&pushed.stdout), text(&pushed.stderr));
    assert!(
        said.contains(&format!(
            "Pushed: {}/blastguard/charts/blastguard:{VERSION}",
            registry.host
        )),
        "{said}"
    );
    let chart = format!("oci://{}/blastguard/charts/blastguard", registry.host);
    let mut from_registry = vec!["template", "blastguard", chart.as_str()];
    from_registry.extend([
        "--version",
        VERSION,
        "--plain-http",
        "--namespace",
        "blastguard-system",
    ]);
    from_registry.extend(CERT_MANAGER);
    let out = succeed(&mut helm(&from_registry));
    assert_eq!(text(&out.stdout), rendered(&archive, &CERT_MANAGER));
}
