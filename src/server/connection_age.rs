//! A bounded lifetime for webhook connections (`serve --max-connection-age`), so the
//! API server spreads its calls over every replica behind the Service.
//!
//! The API server keeps one HTTP/2 connection to a webhook and sends every review over
//! it: without an end, the replica at its other end answers everything until that pod
//! goes, and a second replica only waits (docs/development.md, the node tests). Past
//! its age a connection is closed gracefully, and the API server dials the Service
//! again, landing on any ready endpoint:
//!
//! - HTTP/2: a GOAWAY. Streams the client already opened are answered on the old
//!   connection; it opens new ones on a new connection. The client never sees an
//!   error (a stream the GOAWAY refused is one the server never started, which
//!   clients retry).
//! - HTTP/1.1: the next response carries `Connection: close` and the server closes
//!   after writing it, so the client never sends a request on a connection that is
//!   about to close. An idle connection is not closed under a client that may be
//!   sending on it at that instant; the idle keep-alive timeout (`--header-read-timeout`)
//!   ends it if no request comes.
//!
//! Each connection's lifetime is drawn between 90% and 100% of the age, so the
//! connections of many API servers, opened together after a rollout, do not all end
//! together.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Version, header};
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::time::Instant;

/// The share of the age a connection's lifetime may be shortened by, as a divisor:
/// lifetimes fall between 90% and 100% of the age.
const JITTER_DIVISOR: u32 = 10;

/// How long one connection is served.
#[derive(Debug)]
pub(super) struct Lifetime {
    /// When it ends; `None` when connections are not bounded in age.
    ends: Option<Instant>,
    /// Set once an HTTP/1 response said `Connection: close` for the age.
    told_close: AtomicBool,
}

impl Lifetime {
    /// A lifetime for a connection opened now, under `max_age` (`None` or zero: no
    /// bound).
    pub(super) fn new(max_age: Option<Duration>) -> Self {
        let ends = max_age
            .filter(|age| !age.is_zero())
            .and_then(|age| Instant::now().checked_add(jittered(age, random_unit())));
        Self {
            ends,
            told_close: AtomicBool::new(false),
        }
    }

    /// Resolves when the connection has lived its lifetime; never when unbounded.
    pub(super) async fn ended(&self) {
        match self.ends {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    }

    /// Whether the connection has lived its lifetime.
    fn is_over(&self) -> bool {
        self.ends.is_some_and(|t| Instant::now() >= t)
    }

    /// For a response to a request of `version`: past its lifetime, an HTTP/1
    /// connection ends with this response (`Connection: close`, which the HTTP/1 server
    /// honours by closing after it). Returns whether it was so marked. HTTP/2
    /// connections end with a GOAWAY instead ([`Lifetime::ended`]).
    pub(super) fn close_after(&self, version: Version, headers: &mut HeaderMap) -> bool {
        let http1 = matches!(
            version,
            Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
        );
        if !http1 || !self.is_over() {
            return false;
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        self.told_close.store(true, Ordering::Relaxed);
        true
    }

    /// Whether an HTTP/1 response ended the connection for its age.
    pub(super) fn told_close(&self) -> bool {
        self.told_close.load(Ordering::Relaxed)
    }
}

/// `age` shortened by `unit` (in [0, 1)) of a tenth of it.
fn jittered(age: Duration, unit: f64) -> Duration {
    let spread = age
        .checked_div(JITTER_DIVISOR)
        .unwrap_or_default()
        .mul_f64(unit.clamp(0.0, 1.0));
    age.saturating_sub(spread)
}

/// A random number in [0, 1). Without randomness (the system source failing) every
/// lifetime is the whole age, which is still a bound.
fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_fall_between_nine_tenths_and_the_whole_age() {
        let age = Duration::from_secs(60);
        assert_eq!(jittered(age, 0.0), age);
        assert_eq!(jittered(age, 0.5), Duration::from_secs(57));
        assert!(jittered(age, 0.999_999) > Duration::from_secs(54));
        // Out of range never goes past the bounds.
        assert_eq!(jittered(age, 7.0), Duration::from_secs(54));
        assert_eq!(jittered(age, -1.0), age);
        assert!(jittered(Duration::MAX, 0.5) < Duration::MAX);
        let draws: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)), "{draws:?}");
        // Spread, not one value: 64 draws are not all in one tenth.
        let min = draws.iter().copied().fold(1.0, f64::min);
        let max = draws.iter().copied().fold(0.0, f64::max);
        assert!(max - min > 0.1, "{draws:?}");
    }

    #[tokio::test]
    async fn only_http1_responses_past_the_age_say_close() {
        let lifetime = Lifetime::new(Some(Duration::from_millis(200)));
        let mut headers = HeaderMap::new();
        assert!(!lifetime.close_after(Version::HTTP_11, &mut headers));
        assert!(headers.is_empty());
        tokio::time::timeout(Duration::from_secs(10), lifetime.ended())
            .await
            .expect("the lifetime ends within its age");
        assert!(!lifetime.close_after(Version::HTTP_2, &mut headers));
        assert!(headers.is_empty());
        assert!(!lifetime.told_close());
        assert!(lifetime.close_after(Version::HTTP_11, &mut headers));
        assert_eq!(headers[header::CONNECTION], "close");
        assert!(lifetime.told_close());
    }

    #[tokio::test]
    async fn no_age_or_zero_never_ends() {
        for age in [None, Some(Duration::ZERO)] {
            let lifetime = Lifetime::new(age);
            assert!(lifetime.ends.is_none(), "{age:?}");
            let ended = tokio::time::timeout(Duration::from_millis(100), lifetime.ended());
            assert!(ended.await.is_err(), "{age:?}");
            assert!(!lifetime.close_after(Version::HTTP_11, &mut HeaderMap::new()));
        }
    }
}
