//! blastguard: a Kubernetes validating admission webhook that holds AI-assisted changes
//! with a high blast radius until senior engineers sign an approval for exactly them.
//!
//! The contract is docs/design.md; the layout and where new code goes,
//! docs/architecture.md.
//!
//! The request path, as [`engine`] runs it: [`review`] reads the AdmissionReview into
//! a borrowed view; [`provenance`] tells from that view whether the change is
//! AI-assisted (a person's change is allowed there, its objects never parsed); only
//! then [`change`] normalizes it, [`policy`] picks the namespace's rule, [`radius`]
//! measures it (with [`change_sets`] across requests and [`sizes`] of what it
//! touches), [`approval`] checks a signed approval, [`verdict`] decides and
//! [`response`] writes the answer. [`budget`] bounds the cluster reads of one decision.
//!
//! The I/O edges import that core, never the reverse (tests/layering.rs): [`cluster`]
//! fills the engine's state from the API server, [`server`] serves HTTPS and metrics,
//! [`cli`] is the command line.

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
    review,
    change,
    provenance,
    kinds,
    radius,
    change_sets,
    sizes,
    verdict,
    response,
    engine
);

pub mod annotations;
pub mod approval;
pub mod budget;
pub mod cli;
pub mod cluster;
pub mod defaults;
pub mod identity;
pub mod policy;
pub mod server;
#[cfg(test)]
pub(crate) mod testing;
pub mod yaml;
