//! Reading a request body: under a size cap, a deadline and a minimum rate, within a
//! fair share of the memory all bodies may hold at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::listener::Client;
use super::metrics::Unjudged;

/// Largest AdmissionReview body read: the API server caps objects at about 3 MiB and
/// a review carries the old and the new object.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// After an oversized body, up to this much more is read and discarded so an HTTP/1
/// client that is still sending receives the 413 instead of a reset connection.
const OVERSIZE_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// Request bodies held in memory at once, across all requests: connections times
/// HTTP/2 streams times the size cap would otherwise allow gigabytes. Room for four
/// bodies at the cap; the API server's reviews are a few kilobytes.
pub const BODY_MEMORY_BYTES: usize = 4 * MAX_BODY_BYTES;

/// The first bytes of every body. Everyday reviews fit in them, and the part of the
/// budget past them is smaller than the whole by [`SMALL_BODY_RESERVE_BYTES`], so
/// large bodies, however many and however slow, never take the memory that small
/// reviews need.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// Budget only the first [`SMALL_BODY_BYTES`] of bodies may use: 64 small reviews at
/// once while large bodies hold all they can.
pub const SMALL_BODY_RESERVE_BYTES: usize = BODY_MEMORY_BYTES / 8;

/// Most body memory one client address holds at once: half the budget, so one client
/// (one pod) cannot take it all, while the API server still fits two bodies at the cap.
pub const PEER_SHARE_BYTES: usize = BODY_MEMORY_BYTES / 2;

/// Most body memory one connection holds at once: a body at the cap, and everyday
/// reviews beside it on the same HTTP/2 connection.
pub const CONNECTION_SHARE_BYTES: usize = MAX_BODY_BYTES + 1024 * 1024;

/// The minimum rate a body must arrive at: every [`BODY_PROGRESS_WINDOW`], at least
/// [`BODY_PROGRESS_BYTES`] more (or the rest of it). The API server sends a body at
/// network speed; one that trickles in is cut at once, not at the body timeout, so it
/// cannot hold memory for long whatever it declared.
pub const BODY_PROGRESS_WINDOW: Duration = Duration::from_secs(2);

/// See [`BODY_PROGRESS_WINDOW`]: 16 KiB/s.
pub const BODY_PROGRESS_BYTES: usize = 32 * 1024;

/// Unit of the body memory budget.
const BUDGET_UNIT: usize = 1024;

/// Why a body could not be read.
#[derive(Debug)]
pub(super) enum BodyError {
    TooLarge,
    Timeout,
    TooSlow,
    Busy,
    OverShare(Share),
    Read(String),
}

/// Whose share of the body memory a request waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Share {
    /// Every body of one client address.
    Peer(IpAddr),
    /// Every body of one connection.
    Connection(u64),
}

impl BodyError {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout | BodyError::TooSlow => StatusCode::REQUEST_TIMEOUT,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::OverShare(_) => StatusCode::TOO_MANY_REQUESTS,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub(super) fn metric(&self) -> Unjudged {
        match self {
            BodyError::TooLarge => Unjudged::TooLarge,
            BodyError::Timeout => Unjudged::Timeout,
            BodyError::TooSlow => Unjudged::TooSlow,
            BodyError::Busy => Unjudged::Busy,
            BodyError::OverShare(_) => Unjudged::OverShare,
            BodyError::Read(_) => Unjudged::BodyError,
        }
    }

    pub(super) fn message(&self, time_allowed: Duration) -> String {
        const MIB: usize = 1024 * 1024;
        match self {
            BodyError::TooLarge => format!(
                "request body too large: an AdmissionReview may be at most {} MiB ({MAX_BODY_BYTES} bytes)",
                MAX_BODY_BYTES / MIB
            ),
            BodyError::Timeout => format!(
                "request body not received within {}",
                humantime::format_duration(time_allowed)
            ),
            BodyError::TooSlow => format!(
                "request body cut off: it arrived slower than {} KiB per {}",
                BODY_PROGRESS_BYTES / 1024,
                humantime::format_duration(BODY_PROGRESS_WINDOW)
            ),
            BodyError::Busy => format!(
                "server busy: other requests hold all {} MiB of body memory; retry",
                BODY_MEMORY_BYTES / MIB
            ),
            BodyError::OverShare(Share::Peer(ip)) => format!(
                "too many request bodies at once from {ip}: one address may hold {} MiB of body memory; retry",
                PEER_SHARE_BYTES / MIB
            ),
            BodyError::OverShare(Share::Connection(_)) => format!(
                "too many request bodies at once on this connection: one connection may hold {} MiB of body memory; retry",
                CONNECTION_SHARE_BYTES / MIB
            ),
            BodyError::Read(e) => format!("could not read the request body: {e}"),
        }
    }
}

/// The memory for request bodies, counted in KiB: one budget for all, a part of
/// it only the first bytes of each body may use, and a share per client address and
/// per connection, so that no client can hold it all.
pub struct BodyMemory {
    total: Arc<Semaphore>,
    /// Bytes past the first [`SMALL_BODY_BYTES`] of a body take from here too.
    large: Arc<Semaphore>,
    /// The shares in use, each with what is left of it; dropped when unused and full.
    shares: Mutex<HashMap<Share, Arc<Semaphore>>>,
}

impl BodyMemory {
    /// A budget of `bytes`, with the reserve and shares in proportion.
    pub fn new(bytes: usize) -> Self {
        let units = |bytes: usize| bytes.checked_div(BUDGET_UNIT).unwrap_or(0);
        Self {
            total: Arc::new(Semaphore::new(units(bytes))),
            large: Arc::new(Semaphore::new(units(
                bytes.saturating_sub(bytes.checked_div(8).unwrap_or(0)),
            ))),
            shares: Mutex::new(HashMap::new()),
        }
    }

    fn share_units(share: Share) -> usize {
        let bytes = match share {
            Share::Peer(_) => PEER_SHARE_BYTES,
            Share::Connection(_) => CONNECTION_SHARE_BYTES,
        };
        bytes.checked_div(BUDGET_UNIT).unwrap_or(0)
    }

    fn share(&self, share: Share) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        shares
            .entry(share)
            .or_insert_with(|| Arc::new(Semaphore::new(Self::share_units(share))))
            .clone()
    }

    /// Forgets a share nobody holds, so the map does not grow with every address and
    /// connection ever seen.
    fn release(&self, share: Share, semaphore: Arc<Semaphore>) {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        drop(semaphore);
        if shares.get(&share).is_some_and(|s| {
            Arc::strong_count(s) == 1 && s.available_permits() == Self::share_units(share)
        }) {
            shares.remove(&share);
        }
    }

    /// Units free in the whole budget (for tests and metrics).
    pub fn available_bytes(&self) -> usize {
        self.total.available_permits().saturating_mul(BUDGET_UNIT)
    }
}

/// What one body holds of the memory: given back when dropped.
pub(super) struct Held {
    memory: Arc<BodyMemory>,
    /// The shares this body counts against, with their permits.
    shares: Vec<(Share, Arc<Semaphore>, Option<OwnedSemaphorePermit>)>,
    large: Option<OwnedSemaphorePermit>,
    total: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("bytes", &self.units().saturating_mul(BUDGET_UNIT))
            .finish_non_exhaustive()
    }
}

impl Held {
    fn units(&self) -> usize {
        self.total
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    fn large_units(&self) -> usize {
        self.large
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Takes `more` units (of which `more_large` past the small part) from every
    /// share, then the budget, waiting until `deadline`.
    async fn grow(
        &mut self,
        more: usize,
        more_large: usize,
        deadline: tokio::time::Instant,
    ) -> Result<(), BodyError> {
        let take = |semaphore: Arc<Semaphore>, units: usize| async move {
            let units = u32::try_from(units).map_err(|_| ())?;
            tokio::time::timeout_at(deadline, semaphore.acquire_many_owned(units))
                .await
                .map_err(|_| ())?
                .map_err(|_| ())
        };
        for (share, semaphore, held) in &mut self.shares {
            let permit = take(semaphore.clone(), more)
                .await
                .map_err(|()| BodyError::OverShare(*share))?;
            merge(held, permit);
        }
        if more_large > 0 {
            let permit = take(self.memory.large.clone(), more_large)
                .await
                .map_err(|()| BodyError::Busy)?;
            merge(&mut self.large, permit);
        }
        let permit = take(self.memory.total.clone(), more)
            .await
            .map_err(|()| BodyError::Busy)?;
        merge(&mut self.total, permit);
        Ok(())
    }
}

fn merge(held: &mut Option<OwnedSemaphorePermit>, permit: OwnedSemaphorePermit) {
    match held {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.large = None;
        self.total = None;
        for (share, semaphore, permit) in self.shares.drain(..) {
            drop(permit);
            self.memory.release(share, semaphore);
        }
    }
}

/// The budget units a body of `bytes` takes: in all, and past its small part.
fn units(bytes: usize) -> (usize, usize) {
    let units = bytes.div_ceil(BUDGET_UNIT);
    let small = SMALL_BODY_BYTES.div_ceil(BUDGET_UNIT);
    (units, units.saturating_sub(small))
}

/// Reads one request body within the size cap, the deadline, the minimum rate and the
/// client's share of the body memory.
pub(super) struct BodyReader {
    /// The memory it takes its share from.
    pub(super) memory: Arc<BodyMemory>,
    /// Who sent it; `None` when not served by the listener (unit tests).
    pub(super) client: Option<Client>,
    /// The Content-Length, if any: taken from the memory whole before reading.
    pub(super) declared: Option<usize>,
    /// When the whole body must have arrived.
    pub(super) deadline: Instant,
}

impl BodyReader {
    /// Reads at most [`MAX_BODY_BYTES`] before the deadline; the cap is enforced while
    /// reading, whatever Content-Length claims. The memory held is given back when the
    /// returned [`Held`] is dropped.
    pub(super) async fn read(&self, mut body: Body) -> Result<(Bytes, Held), BodyError> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let mut buf = Collected::default();
        let mut held = Held {
            memory: self.memory.clone(),
            shares: self
                .client
                .map(|c| [Share::Connection(c.connection), Share::Peer(c.ip)])
                .into_iter()
                .flatten()
                .map(|share| (share, self.memory.share(share), None))
                .collect(),
            large: None,
            total: None,
        };
        let mut too_large = self.declared.is_some_and(|n| n > MAX_BODY_BYTES);
        // A declared size is taken whole before reading, holding nothing while it
        // waits: bodies that each took part of it and waited for the rest would hold
        // it all and wait on each other until their deadlines.
        if let Some(declared) = self.declared.filter(|_| !too_large) {
            let (units, large_units) = units(declared);
            held.grow(units, large_units, deadline).await?;
        }
        let mut discarded = 0usize;
        // The minimum rate: by `progress.0`, the body must have grown past
        // `progress.1` bytes.
        let mut progress = self.next_progress(0);
        loop {
            let stall = progress.0.min(deadline);
            let frame = match tokio::time::timeout_at(stall, body.frame()).await {
                Err(_) if too_large => return Err(BodyError::TooLarge),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(BodyError::Timeout);
                }
                Err(_) => return Err(BodyError::TooSlow),
                Ok(None) => break,
                Ok(Some(Err(_))) if too_large => return Err(BodyError::TooLarge),
                Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let size = buf.len().saturating_add(data.len());
            if too_large || size > MAX_BODY_BYTES {
                too_large = true;
                buf = Collected::default();
                held.shares.iter_mut().for_each(|(_, _, p)| *p = None);
                held.large = None;
                held.total = None;
                discarded = discarded.saturating_add(data.len());
                if discarded > OVERSIZE_DRAIN_BYTES {
                    return Err(BodyError::TooLarge);
                }
                if discarded >= progress.1 {
                    progress = self.next_progress(discarded);
                }
                continue;
            }
            let (units, large_units) = units(size);
            let more = units.saturating_sub(held.units());
            let more_large = large_units.saturating_sub(held.large_units());
            if more > 0 {
                let waited = tokio::time::Instant::now();
                // A body of unknown size grows as it arrives. While it holds some
                // memory it waits for more at most one progress window, then gives
                // up what it holds, so bodies never hold memory waiting on each other.
                let wait_until = if held.units() > 0 {
                    waited
                        .checked_add(BODY_PROGRESS_WINDOW)
                        .map_or(deadline, |w| w.min(deadline))
                } else {
                    deadline
                };
                held.grow(more, more_large, wait_until).await?;
                // The time spent waiting for memory is the server's, not the client's:
                // the minimum rate counts from now.
                if waited.elapsed() > Duration::from_millis(10) {
                    progress.0 = tokio::time::Instant::now()
                        .checked_add(BODY_PROGRESS_WINDOW)
                        .unwrap_or(deadline);
                }
            }
            buf.push(data, self.declared);
            if buf.len() >= progress.1 {
                progress = self.next_progress(buf.len());
            }
        }
        if too_large {
            return Err(BodyError::TooLarge);
        }
        Ok((buf.into_bytes(), held))
    }

    /// The next check of the minimum rate, for a body of `received` bytes so far: by
    /// one window from now, [`BODY_PROGRESS_BYTES`] more, or the rest of what was
    /// declared.
    fn next_progress(&self, received: usize) -> (tokio::time::Instant, usize) {
        let now = tokio::time::Instant::now();
        let by = now.checked_add(BODY_PROGRESS_WINDOW).unwrap_or(now);
        let want = received.saturating_add(BODY_PROGRESS_BYTES);
        let want = match self.declared {
            Some(declared) if declared > received => want.min(declared),
            _ => want,
        };
        (by, want)
    }
}

/// A body as it arrives. A body that comes in one frame (an everyday review over
/// HTTP/2 fits in one) is kept as that frame, without a copy; a second frame moves
/// the body into a buffer of its own. A kept frame may share its allocation with the
/// connection's read buffer (16 KiB frames over HTTP/2, hyper's bounded buffer over
/// HTTP/1), which it holds only until the decision is made; bodies past a frame,
/// the large ones the budget is for, are always copied, so the budget counts them.
#[derive(Default)]
struct Collected {
    first: Option<Bytes>,
    rest: Vec<u8>,
}

impl Collected {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.rest.len(), Bytes::len)
    }

    /// Adds a frame; `declared` is the Content-Length, whose memory is already granted.
    fn push(&mut self, data: Bytes, declared: Option<usize>) {
        if self.rest.is_empty() && self.first.is_none() {
            self.first = Some(data);
            return;
        }
        if let Some(first) = self.first.take() {
            // The buffer takes the whole declared size at once, so it never grows by
            // doubling (a 3 MiB body would hold 4 MiB, and 6 MiB while copied over).
            // Pages the client never sends are never touched, so never resident.
            let size = first.len().saturating_add(data.len());
            self.rest
                .reserve_exact(declared.filter(|&d| d > size).unwrap_or(size));
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&data);
    }

    fn into_bytes(self) -> Bytes {
        self.first.unwrap_or_else(|| Bytes::from(self.rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(200)
    }

    fn client(ip: u8, connection: u64) -> Option<Client> {
        Some(Client {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, ip)),
            connection,
        })
    }

    fn reader(
        memory: &Arc<BodyMemory>,
        client: Option<Client>,
        declared: Option<usize>,
        deadline: Instant,
    ) -> BodyReader {
        BodyReader {
            memory: memory.clone(),
            client,
            declared,
            deadline,
        }
    }

    fn budget() -> Arc<BodyMemory> {
        Arc::new(BodyMemory::new(BODY_MEMORY_BYTES))
    }

    #[tokio::test]
    async fn the_size_cap_holds_whatever_content_length_says() {
        let memory = budget();
        let at_cap = vec![b'x'; MAX_BODY_BYTES];
        let read = reader(&memory, client(1, 1), None, far())
            .read(Body::from(at_cap))
            .await;
        assert_eq!(read.unwrap().0.len(), MAX_BODY_BYTES);

        let over = vec![b'x'; MAX_BODY_BYTES + 1];
        for declared in [None, Some(10), Some(MAX_BODY_BYTES + 1)] {
            let read = reader(&memory, client(1, 1), declared, far())
                .read(Body::from(over.clone()))
                .await;
            assert!(
                matches!(read, Err(BodyError::TooLarge)),
                "declared {declared:?}"
            );
        }
        assert_eq!(
            memory.available_bytes(),
            BODY_MEMORY_BYTES,
            "every body's memory is given back"
        );
        assert!(
            memory.shares.lock().unwrap().is_empty(),
            "shares nobody holds are forgotten"
        );
    }

    #[tokio::test]
    async fn large_bodies_wait_for_memory_but_never_take_what_small_ones_need() {
        let memory = Arc::new(BodyMemory::new(2 * MAX_BODY_BYTES));
        let first = reader(&memory, client(1, 1), None, far())
            .read(Body::from(vec![b'x'; MAX_BODY_BYTES - 100]))
            .await
            .unwrap();
        // A second large body from another client finds the large part of the budget
        // taken (the reserve for small bodies stays free) and gives up at its deadline.
        let second = reader(&memory, client(2, 2), None, soon())
            .read(Body::from(vec![b'y'; MAX_BODY_BYTES - 100]))
            .await;
        assert!(matches!(second, Err(BodyError::Busy)), "{second:?}");
        // A small one is read at once meanwhile.
        let small = reader(&memory, client(3, 3), None, soon())
            .read(Body::from(vec![b'z'; 10]))
            .await;
        assert_eq!(small.unwrap().0, &b"zzzzzzzzzz"[..]);
        drop(first);
        let third = reader(&memory, client(2, 2), None, far())
            .read(Body::from(vec![b'y'; MAX_BODY_BYTES - 100]))
            .await;
        assert!(third.is_ok());
    }

    #[tokio::test]
    async fn one_address_or_connection_holds_at_most_its_share() {
        let memory = budget();
        let big = || Body::from(vec![b'x'; MAX_BODY_BYTES - 100]);
        // Two bodies at the cap from one address on two connections: its share.
        let a = reader(&memory, client(1, 1), None, far())
            .read(big())
            .await
            .unwrap();
        let b = reader(&memory, client(1, 2), None, far())
            .read(big())
            .await
            .unwrap();
        let third = reader(&memory, client(1, 3), None, soon())
            .read(Body::from(vec![b'x'; 1024 * 1024]))
            .await;
        assert!(
            matches!(third, Err(BodyError::OverShare(Share::Peer(_)))),
            "{third:?}"
        );
        // Another address still gets a body at the cap.
        let other = reader(&memory, client(2, 4), None, soon())
            .read(big())
            .await;
        assert!(other.is_ok(), "{other:?}");
        drop((a, b, other));

        // One connection: a body at the cap, a small one beside it, not a second large.
        let a = reader(&memory, client(3, 5), None, far())
            .read(big())
            .await
            .unwrap();
        let small = reader(&memory, client(3, 5), None, soon())
            .read(Body::from(vec![b'x'; 10 * 1024]))
            .await;
        assert!(small.is_ok());
        let second = reader(&memory, client(3, 5), None, soon())
            .read(Body::from(vec![b'x'; 4 * 1024 * 1024]))
            .await;
        assert!(
            matches!(second, Err(BodyError::OverShare(Share::Connection(5)))),
            "{second:?}"
        );
        drop((a, small));
        assert_eq!(memory.available_bytes(), BODY_MEMORY_BYTES);
        assert!(memory.shares.lock().unwrap().is_empty());
    }

    /// A body sent as the given frames, one per poll.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl axum::body::HttpBody for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn a_body_in_one_frame_is_kept_as_it_came_and_one_in_many_is_joined() {
        let memory = budget();
        let frame = Bytes::from(vec![b'a'; 12 * 1024]);
        for declared in [None, Some(frame.len())] {
            let (body, _held) = reader(&memory, client(1, 1), declared, far())
                .read(Body::new(Frames([frame.clone()].into())))
                .await
                .unwrap();
            assert_eq!(body, frame);
            assert_eq!(body.as_ptr(), frame.as_ptr(), "not copied");
        }
        let parts: Vec<Bytes> = [b'x', b'y', b'z']
            .map(|c| Bytes::from(vec![c; 5000]))
            .into();
        let whole: Vec<u8> = parts.concat();
        for declared in [None, Some(whole.len()), Some(whole.len() + 10)] {
            let (body, _held) = reader(&memory, client(1, 1), declared, far())
                .read(Body::new(Frames(parts.clone().into())))
                .await
                .unwrap();
            assert_eq!(body, whole, "declared {declared:?}");
        }
    }

    /// A client that sent its headers, then `first` bytes, then nothing.
    struct Stops(Option<Vec<u8>>);

    impl axum::body::HttpBody for Stops {
        type Data = axum::body::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            match self.0.take() {
                Some(first) => Poll::Ready(Some(Ok(hyper::body::Frame::data(first.into())))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let memory = budget();
        let deadline = Instant::now() + Duration::from_millis(50);
        let read = reader(&memory, None, Some(100), deadline)
            .read(Body::new(Stops(None)))
            .await;
        assert!(matches!(read, Err(BodyError::Timeout)));
    }

    #[tokio::test]
    async fn a_body_slower_than_the_minimum_rate_is_cut_before_its_deadline() {
        let memory = budget();
        let started = Instant::now();
        let read = reader(&memory, client(1, 1), Some(8_000_000), far())
            .read(Body::new(Stops(Some(vec![b'x'; 6 * 1024 * 1024]))))
            .await;
        assert!(matches!(read, Err(BodyError::TooSlow)), "{read:?}");
        let took = started.elapsed();
        assert!(
            took >= BODY_PROGRESS_WINDOW && took < BODY_PROGRESS_WINDOW * 3,
            "cut after {took:?}"
        );
        assert_eq!(memory.available_bytes(), BODY_MEMORY_BYTES);
    }
}
