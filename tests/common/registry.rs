//! An OCI registry on loopback for the tests that push or pull images and charts.

use super::tool;

/// An OCI registry on loopback, in memory (go-containerregistry's reference registry,
/// `.tools/bin/ggcr-registry`), for the release tests' pushes and the node's pulls;
/// stopped when dropped.
pub struct Registry {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

impl Registry {
    pub fn start() -> Registry {
        use std::io::BufRead as _;
        let mut child = tool("ggcr-registry")
            .args(["-port", "0"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let port = lines
            .find_map(|l| {
                let l = l.ok()?;
                l.split("serving on port ")
                    .nth(1)
                    .map(|p| p.trim().to_string())
            })
            .expect("the registry prints its port");
        std::thread::spawn(move || lines.for_each(drop));
        Registry {
            child,
            host: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
