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

/// Declares the modules of the request path, with the lints that keep the ways to
/// write a panic out of them: no `unwrap`, no `expect`, no unchecked indexing or
/// arithmetic (docs/architecture.md). A panic there fails an admission call (the
/// server answers 500) or, in the listener, every connection of the process. One list
/// of the modules it covers, here and in `server`; their tests may unwrap.
macro_rules! request_path {
    ($($module:ident),* $(,)?) => {
        $(
            #[cfg_attr(
                not(test),
                deny(
                    clippy::unwrap_used,
                    clippy::expect_used,
                    clippy::indexing_slicing,
                    clippy::arithmetic_side_effects
                )
            )]
            pub mod $module;
        )*
    };
}

request_path!(
    review, change, provenance, kinds, radius, reach, sizes, verdict, response, engine
);

pub mod annotations;
pub mod approval;
pub mod cli;
pub mod cluster;
pub mod defaults;
pub mod policy;
pub mod server;
#[cfg(test)]
pub(crate) mod testing;
pub mod yaml;
