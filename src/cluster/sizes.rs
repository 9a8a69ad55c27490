//! [`Sizes`] from the cluster: a workload's replicas and a Service's endpoints.
//!
//! Replicas come from the workload watches (a GET on a miss), endpoints from the
//! Service's EndpointSlices, each read within the decision's budget
//! ([`crate::budget`]); what is not read in time is noted and unknown.

use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;

use super::bridge::Bridge;
use super::workloads::ClusterWorkloads;
use crate::budget;
use crate::change::Target;
use crate::sizes::Sizes;

/// [`Sizes`] through the API server.
pub struct ClusterSizes {
    workloads: Arc<ClusterWorkloads>,
    client: kube::Client,
    bridge: Arc<Bridge>,
}

impl ClusterSizes {
    /// Sizes from `workloads`' watches and, for endpoints, `client`.
    pub fn new(
        workloads: Arc<ClusterWorkloads>,
        client: kube::Client,
        bridge: Arc<Bridge>,
    ) -> Self {
        Self {
            workloads,
            client,
            bridge,
        }
    }
}

impl Sizes for ClusterSizes {
    fn replicas(&self, target: &Target) -> Result<u64, String> {
        self.workloads.replicas(target)
    }

    fn endpoints(&self, namespace: &str, service: &str) -> Result<u64, String> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        let list = async move {
            let slices = api.list(&params).await?;
            let endpoints = slices.items.iter().map(|s| s.endpoints.len() as u64);
            Ok::<u64, kube::Error>(endpoints.sum())
        };
        let unknown = |why: &dyn std::fmt::Display| {
            tracing::warn!(namespace, service, error = %why, "cannot read a Service's endpoints");
            budget::note_unavailable(format!("the endpoints of Service {namespace}/{service}"));
            format!(
                "the endpoints of Service {namespace}/{service} could not be read from the API server in time"
            )
        };
        match self.bridge.call(budget::deadline(), list) {
            Ok(Ok(count)) => Ok(count),
            Ok(Err(e)) => Err(unknown(&e)),
            Err(late) => Err(unknown(&late)),
        }
    }

    fn observe(&self, _target: &Target, _replicas: Option<u64>) {
        // The watch is the truth (see `ClusterWorkloads::observe`).
    }
}
