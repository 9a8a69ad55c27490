//! People and AI agents on the real control plane (tests/e2e_inbox.rs,
//! tests/e2e_request.rs): a kubeconfig each, the admin's impersonating them (`as:`), so
//! kubectl and the plugin's own kubectl calls act as that user, as on their laptop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::cluster::{E2e, Run, run};

/// The users, each with a kubeconfig of their own, and the plugin on PATH.
pub struct Users {
    bin: PathBuf,
    configs: HashMap<String, PathBuf>,
}

/// A user's name as a file name.
fn file_name(user: &str) -> String {
    user.replace([':', '@'], "_")
}

impl Users {
    /// A kubeconfig for each of `users`, and `kubectl-blastguard` on PATH.
    pub fn new(e2e: &E2e, users: &[&str]) -> Users {
        let bin = e2e.work.join("plugin-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_blastguard"),
            bin.join("kubectl-blastguard"),
        )
        .unwrap();
        let admin: Value = serde_json::from_str(
            &e2e.kubectl(&["config", "view", "--raw", "--flatten", "-o", "json"])
                .expect_ok(),
        )
        .unwrap();
        let mut configs = HashMap::new();
        for user in users {
            let mut config = admin.clone();
            for u in config["users"].as_array_mut().unwrap() {
                u["user"]["as"] = json!(user);
            }
            let file = e2e.work.join(format!("kubeconfig-{}", file_name(user)));
            std::fs::write(&file, config.to_string()).unwrap();
            configs.insert(user.to_string(), file);
        }
        Users { bin, configs }
    }

    fn command(&self, e2e: &E2e, user: &str) -> Command {
        let mut cmd: Command = super::tool_with("kubectl", &[&self.bin]);
        cmd.env("KUBECONFIG", &self.configs[user])
            .env(
                "KUBECACHEDIR",
                e2e.work.join(format!("cache-{}", file_name(user))),
            )
            .env_remove("BLASTGUARD_POLICY");
        cmd
    }

    /// `kubectl ARGS` as `user`, the plugin on PATH, `input` on standard input.
    pub fn kubectl(&self, e2e: &E2e, user: &str, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = self.command(e2e, user);
        cmd.args(args);
        run(cmd, input)
    }

    /// `kubectl blastguard ARGS` as `user`.
    pub fn plugin(&self, e2e: &E2e, user: &str, args: &[&str]) -> Run {
        let mut cmd = self.command(e2e, user);
        cmd.arg("blastguard").args(args);
        run(cmd, None)
    }
}
