//! blastguard: a Kubernetes validating admission webhook that holds AI-assisted changes
//! with a high blast radius until senior engineers sign an approval for exactly that
//! change.
//!
//! The modules follow the request path of DESIGN.md section 1:
//! [`review`] (AdmissionReview in) → [`change`] → [`provenance`] → [`radius`]
//! (with [`reach`] for change sets) → [`policy`] → [`approval`] → [`verdict`] →
//! [`response`], tied together by [`engine`]. The webhook server lives in [`server`],
//! the command line in [`cli`]; the state that spans requests, in a cluster, in
//! [`cluster`].

pub mod annotations;
pub mod approval;
pub mod change;
pub mod cli;
pub mod cluster;
pub mod defaults;
pub mod engine;
pub mod kinds;
pub mod policy;
pub mod provenance;
pub mod radius;
pub mod reach;
pub mod response;
pub mod review;
pub mod server;
pub mod verdict;
pub mod yaml;
