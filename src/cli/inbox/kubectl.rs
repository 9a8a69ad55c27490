//! The inbox's reads and writes, made with `kubectl` and the user's kubeconfig, as
//! `check --server` makes its own: whatever authenticates the user's kubectl (exec
//! plugins, OIDC, contexts) authenticates the plugin, and RBAC judges the user.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::approval::request::{KIND, PLURAL};
use crate::cluster::change_sets::record::GROUP;
use crate::cluster::requests::ApprovalRequest;

/// Why the inbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// kubectl could not be run.
    #[error("cannot run {kubectl}: {message}")]
    Run {
        /// The program.
        kubectl: String,
        /// Why.
        message: String,
    },
    /// kubectl failed.
    #[error("kubectl {what}: {message}")]
    Kubectl {
        /// What was asked.
        what: String,
        /// kubectl's words.
        message: String,
    },
    /// Someone changed the request between our read and write.
    #[error(
        "request {0} was changed by someone else while you worked on it; run the command again"
    )]
    Conflict(String),
    /// An answer that is not what was asked for.
    #[error("unreadable answer from kubectl {what}: {message}")]
    Answer {
        /// What was asked.
        what: String,
        /// Why it does not read.
        message: String,
    },
}

/// Where the inbox is: the release namespace, through kubectl.
#[derive(Debug, Clone, clap::Args)]
pub struct InboxCluster {
    /// The namespace blastguard is installed in (its ApprovalRequests').
    #[arg(
        long,
        env = "BLASTGUARD_RELEASE_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = crate::cli::policy_source::DEFAULT_NAMESPACE
    )]
    pub release_namespace: String,
    /// The kubectl to run (with the usual KUBECONFIG and context).
    #[arg(
        long = "kubectl",
        env = "BLASTGUARD_KUBECTL",
        value_name = "PATH",
        default_value = "kubectl"
    )]
    pub kubectl: String,
}

/// The resource name kubectl is given: unambiguous whatever other CRDs exist.
fn resource() -> String {
    format!("{PLURAL}.{GROUP}")
}

impl InboxCluster {
    fn kubectl(
        &self,
        what: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, InboxError> {
        let mut command = Command::new(&self.kubectl);
        command
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| InboxError::Run {
            kubectl: self.kubectl.clone(),
            message: e.to_string(),
        })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write as _;
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| InboxError::Run {
                    kubectl: self.kubectl.clone(),
                    message: e.to_string(),
                })?;
        }
        let out = child.wait_with_output().map_err(|e| InboxError::Run {
            kubectl: self.kubectl.clone(),
            message: e.to_string(),
        })?;
        if !out.status.success() {
            let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if message.contains("the object has been modified") {
                return Err(InboxError::Conflict(what.to_string()));
            }
            return Err(InboxError::Kubectl {
                what: what.to_string(),
                message,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One request.
    pub fn get(&self, name: &str) -> Result<ApprovalRequest, InboxError> {
        let what = format!("get {} {name}", resource());
        let text = self.get_json(&what, &resource(), name)?;
        serde_json::from_str(&text).map_err(|e| InboxError::Answer {
            what,
            message: e.to_string(),
        })
    }

    /// `kubectl get KIND NAME -n <release namespace> -o json`.
    fn get_json(&self, what: &str, kind: &str, name: &str) -> Result<String, InboxError> {
        let args = [
            "get",
            kind,
            name,
            "-n",
            &self.release_namespace,
            "-o",
            "json",
        ];
        self.kubectl(what, &args, None)
    }

    /// Every request.
    pub fn list(&self) -> Result<Vec<ApprovalRequest>, InboxError> {
        let what = format!("get {}", resource());
        let text = self.kubectl(
            &what,
            &[
                "get",
                &resource(),
                "-n",
                &self.release_namespace,
                "-o",
                "json",
            ],
            None,
        )?;
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            items: Vec<Value>,
        }
        let list: List = serde_json::from_str(&text).map_err(|e| InboxError::Answer {
            what: what.clone(),
            message: e.to_string(),
        })?;
        // A record that does not read (written by hand) is skipped with a note, not
        // an error that hides every other request.
        Ok(list
            .items
            .into_iter()
            .filter_map(|item| {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                serde_json::from_value(item)
                    .map_err(|e| eprintln!("note: skipping request {name}: {e}"))
                    .ok()
            })
            .collect())
    }

    /// Writes a request's status; its `metadata.resourceVersion` makes the write fail
    /// with [`InboxError::Conflict`] when someone wrote in between.
    pub fn write_status(&self, record: &ApprovalRequest) -> Result<(), InboxError> {
        let name = record.metadata.name.clone().unwrap_or_default();
        let body = serde_json::to_string(record).map_err(|e| InboxError::Answer {
            what: "replace".into(),
            message: e.to_string(),
        })?;
        self.kubectl(
            &name,
            &[
                "replace",
                "--subresource=status",
                "-n",
                &self.release_namespace,
                "-f",
                "-",
            ],
            Some(&body),
        )
        .map(|_| ())
    }

    /// Creates a request; `Ok(false)` when one of that name exists already.
    pub fn create(&self, record: &ApprovalRequest) -> Result<bool, InboxError> {
        let body = serde_json::to_string(record).map_err(|e| InboxError::Answer {
            what: "create".into(),
            message: e.to_string(),
        })?;
        match self.kubectl(
            &format!("create {KIND}"),
            &["create", "-n", &self.release_namespace, "-f", "-"],
            Some(&body),
        ) {
            Ok(_) => Ok(true),
            Err(InboxError::Kubectl { message, .. })
                if message.contains("AlreadyExists") || message.contains("already exists") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The live object a request is for, as the API server presents it (`None`: it
    /// does not exist, or cannot be read).
    pub fn live(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut args = vec!["get", resource.as_str(), name, "-o", "json"];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        let text = self.kubectl("get", &args, None).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The user kubectl acts as (`kubectl auth whoami`), when the cluster says.
    pub fn whoami(&self) -> Option<String> {
        self.kubectl(
            "auth whoami",
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    }

    /// The labels of a namespace (`None`: it cannot be read, or does not exist).
    pub fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let text = self
            .kubectl(
                "get namespace",
                &["get", "namespace", namespace, "-o", "json"],
                None,
            )
            .ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        Some(
            value
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|labels| {
                    labels
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// A data key of a ConfigMap in the release namespace.
    pub fn configmap_key(&self, name: &str, key: &str) -> Option<String> {
        let text = self.get_json("get configmap", "configmap", name).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        value
            .pointer(&format!(
                "/data/{}",
                key.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}
