//! Reloading files without restart by polling their content.
//!
//! Kubernetes updates mounted Secrets and ConfigMaps by writing a new timestamped
//! directory and swapping the `..data` symlink; the visible file path (`dir/tls.crt ->
//! ..data/tls.crt`) never changes, so inotify on the file path misses the update. Reading
//! the bytes through the path on every tick sees every kind of update: symlink swaps,
//! renames and in-place writes.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest file a watch reads: policies, signer lists and certificates are far smaller,
/// and the bound keeps a wrong path (a device, a huge log) from exhausting memory.
pub const MAX_WATCHED_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// How many times a read is repeated to get two identical ones in a row.
const SETTLE_ATTEMPTS: usize = 5;

/// Why a watched file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {path}: {message}")]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// What a set of files held at one moment: the bytes of each, in order, or why one of
/// them could not be read.
pub type Snapshot = Result<Vec<Vec<u8>>, ReadError>;

/// Remembers the content of a set of files read together (a certificate and its key)
/// and reports when it changes.
#[derive(Debug)]
pub struct ContentWatch {
    paths: Vec<PathBuf>,
    last: Option<Snapshot>,
}

impl ContentWatch {
    /// A watch over `paths` that has seen nothing yet, so its first poll reports.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, last: None }
    }

    /// The watched files.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads the files and returns what they hold when it differs from the last poll
    /// (always on the first poll). A read error is a state like any other: it is
    /// reported once, when it starts, not on every tick.
    pub fn poll(&mut self) -> Option<Snapshot> {
        let first = read_all(&self.paths);
        if self.last.as_ref() == Some(&first) {
            return None;
        }
        let settled = self.settle(first);
        if self.last.as_ref() == Some(&settled) {
            return None;
        }
        self.last = Some(settled.clone());
        Some(settled)
    }

    /// Reads the files now and remembers what they hold, changed or not.
    pub fn read(&mut self) -> Snapshot {
        let settled = self.settle(read_all(&self.paths));
        self.last = Some(settled.clone());
        settled
    }

    /// Files that belong together are read until two reads in a row agree, so a swap
    /// that lands between reading the certificate and reading the key is never seen
    /// as a mismatched pair.
    fn settle(&self, mut settled: Snapshot) -> Snapshot {
        for _ in 0..SETTLE_ATTEMPTS {
            let again = read_all(&self.paths);
            if again == settled {
                break;
            }
            settled = again;
        }
        settled
    }
}

fn read_all(paths: &[PathBuf]) -> Snapshot {
    paths.iter().map(|p| read_bounded(p)).collect()
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    let fail = |message: String| ReadError {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_WATCHED_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_WATCHED_FILE_BYTES {
        return Err(fail(format!(
            "larger than {MAX_WATCHED_FILE_BYTES} bytes, which no policy, signer list or certificate is"
        )));
    }
    Ok(bytes)
}

/// Runs `tick` now and then every `interval` on a thread of its own, for the life of
/// the process. File reads block, so they stay off the async runtime.
pub fn spawn_poller(
    name: &str,
    interval: Duration,
    mut tick: impl FnMut() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("reload-{name}"))
        .spawn(move || {
            loop {
                tick();
                std::thread::sleep(interval);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Writes files the way the kubelet updates a Secret or ConfigMap volume: a new
    /// timestamped directory, then an atomic rename of the `..data` symlink.
    fn kubelet_write(dir: &Path, generation: u32, files: &[(&str, &str)]) {
        let data_dir = format!("..2026_01_01_00_00_{generation:02}.000000001");
        std::fs::create_dir(dir.join(&data_dir)).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(&data_dir).join(name), content).unwrap();
            let link = dir.join(name);
            if link.symlink_metadata().is_err() {
                symlink(Path::new("..data").join(name), link).unwrap();
            }
        }
        symlink(&data_dir, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    }

    fn bytes(items: &[&str]) -> Snapshot {
        Ok(items.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    #[test]
    fn reports_first_content_then_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "one").unwrap();
        let mut watch = ContentWatch::new(vec![path.clone()]);
        assert_eq!(watch.poll(), Some(bytes(&["one"])));
        assert_eq!(watch.poll(), None);
        std::fs::write(&path, "two").unwrap();
        assert_eq!(watch.poll(), Some(bytes(&["two"])));
        assert_eq!(watch.poll(), None);
    }

    #[test]
    fn sees_kubelet_symlink_swaps_of_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        kubelet_write(
            dir.path(),
            1,
            &[("tls.crt", "cert-1"), ("tls.key", "key-1")],
        );
        let mut watch =
            ContentWatch::new(vec![dir.path().join("tls.crt"), dir.path().join("tls.key")]);
        assert_eq!(watch.poll(), Some(bytes(&["cert-1", "key-1"])));
        kubelet_write(
            dir.path(),
            2,
            &[("tls.crt", "cert-2"), ("tls.key", "key-2")],
        );
        assert_eq!(watch.poll(), Some(bytes(&["cert-2", "key-2"])));
        assert_eq!(watch.poll(), None);
    }

    #[test]
    fn a_missing_file_is_reported_once_and_its_arrival_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowed_signers");
        let mut watch = ContentWatch::new(vec![path.clone()]);
        let err = watch.poll().unwrap().unwrap_err();
        assert_eq!(err.path, path);
        assert!(err.to_string().contains("allowed_signers"), "{err}");
        assert_eq!(watch.poll(), None);
        std::fs::write(&path, "alice ssh-ed25519 AAAA").unwrap();
        assert_eq!(watch.poll(), Some(bytes(&["alice ssh-ed25519 AAAA"])));
    }

    #[test]
    fn an_oversized_file_is_an_error_not_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge");
        let file = File::create(&path).unwrap();
        file.set_len(MAX_WATCHED_FILE_BYTES + 1).unwrap();
        let mut watch = ContentWatch::new(vec![path]);
        let err = watch.poll().unwrap().unwrap_err();
        assert!(err.message.contains("larger than"), "{err}");
    }
}
