//! The address the review being judged came from, for what the cluster is asked to do
//! on its behalf.
//!
//! On a default install anything that reaches the webhook's port can post a review,
//! and a forged review with a fresh AI-looking username makes a replica create a
//! record at the API server. The change sets share those creates fairly between the
//! addresses reviews come from ([`super::change_sets`]), so a flood from one address
//! does not queue creates at the API server ahead of the API server's own reviews.
//!
//! The server sets the address around a judgement ([`within`]) and the change sets
//! read it ([`current`]) on the same thread: the engine judges a review synchronously,
//! and its waits on the API server block that thread (`block_in_place`) rather than
//! move the judgement elsewhere.

use std::cell::Cell;
use std::net::IpAddr;

thread_local! {
    static CURRENT: Cell<Option<IpAddr>> = const { Cell::new(None) };
}

/// Runs `judge` with `peer` as the current review's address, and restores the one
/// before it afterwards, also when `judge` panics (the server catches panics and
/// keeps using the thread).
pub fn within<T>(peer: Option<IpAddr>, judge: impl FnOnce() -> T) -> T {
    struct Restore(Option<IpAddr>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.set(self.0);
        }
    }
    let _restore = Restore(CURRENT.replace(peer));
    judge()
}

/// The current review's address; `None` outside [`within`] (`check`, tests).
pub fn current() -> Option<IpAddr> {
    CURRENT.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_set_inside_and_restored_after_a_panic() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(current(), None);
        within(Some(a), || {
            assert_eq!(current(), Some(a));
            let caught = std::panic::catch_unwind(|| within(Some(b), || panic!("judged")));
            assert!(caught.is_err());
            assert_eq!(current(), Some(a));
        });
        assert_eq!(current(), None);
    }
}
