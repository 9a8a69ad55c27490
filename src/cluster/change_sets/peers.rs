//! Record creations shared fairly between the addresses reviews come from.
//!
//! A new change-set record is one create at the API server, and a forged review with
//! a fresh AI-looking username asks for one. Without a bound, a client flooding the
//! webhook's port keeps as many creates in flight at the API server as it sends
//! reviews, and a real change's write queues behind them there until its decision
//! stops waiting and is denied (`onClusterUnavailable`). Here each address may have
//! at most [`CREATES_PER_PEER`] creates in flight: the rest of its creates wait their
//! turn in this replica, and another address's creates never wait behind them. The
//! API server's own reviews come from the API server's addresses, which a client in
//! a pod does not share.
//!
//! A record is created for every review queued on it, so its create takes the first
//! turn free among the addresses of those reviews ([`PeerGate::turn_of_any`]): a
//! forged review that queues a victim's record first does not put the victim's real
//! review in the forger's queue.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Creates of new records one address may have in flight at once. A real cluster's
/// AI changes make a new record once per requester and window, and a burst of one
/// requester's changes goes out in one write, so the API server's own reviews rarely
/// need more than this; a flood of fresh usernames needs many.
pub const CREATES_PER_PEER: usize = 4;

/// The creates in flight, per address.
#[derive(Debug, Default)]
pub struct PeerGate {
    peers: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// A turn to create, given back when dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    gate: &'a PeerGate,
    peer: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
}

impl PeerGate {
    fn peers(&self) -> MutexGuard<'_, HashMap<IpAddr, Arc<Semaphore>>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the first turn free among `peers`' to create a record. `None` (and
    /// no wait) when no address asked: changes judged outside the server.
    pub async fn turn_of_any(&self, peers: &[IpAddr]) -> Option<Turn<'_>> {
        if peers.is_empty() {
            return None;
        }
        let waits = peers.iter().map(|p| Box::pin(self.turn(*p)));
        // The other addresses' waits are dropped, and leave their queues.
        futures::future::select_all(waits).await.0
    }

    /// Waits for `peer`'s turn.
    async fn turn(&self, peer: IpAddr) -> Option<Turn<'_>> {
        let semaphore = self
            .peers()
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(CREATES_PER_PEER)))
            .clone();
        // Never closed: the gate owns its semaphores.
        let permit = semaphore.acquire_owned().await.ok()?;
        Some(Turn {
            gate: self,
            peer,
            permit: Some(permit),
        })
    }

    /// Whether no address has a create in flight or waiting.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.peers().is_empty()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        // The last user of an address's semaphore forgets it, so the map holds only
        // addresses with creates in flight or waiting (each waiter holds a clone).
        let mut peers = self.gate.peers();
        if peers
            .get(&self.peer)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            peers.remove(&self.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_address_waits_for_its_own_turns_and_never_holds_up_another() {
        let gate = PeerGate::default();
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let api: IpAddr = "10.0.0.1".parse().unwrap();
        let soon = Duration::from_millis(50);
        let mut turns = Vec::new();
        for _ in 0..CREATES_PER_PEER {
            turns.push(gate.turn_of_any(&[flood]).await.unwrap());
        }
        let next = tokio::time::timeout(soon, gate.turn_of_any(&[flood])).await;
        assert!(next.is_err(), "a fifth create of one address went ahead");
        let other = tokio::time::timeout(soon, gate.turn_of_any(&[api])).await;
        assert!(other.is_ok(), "another address waited behind the flood");
        drop(other);
        // A record both asked for takes the turn free first.
        let either = tokio::time::timeout(soon, gate.turn_of_any(&[flood, api])).await;
        assert_eq!(either.unwrap().unwrap().peer, api);
        assert!(gate.turn_of_any(&[]).await.is_none());
        turns.pop();
        let next = tokio::time::timeout(soon, gate.turn_of_any(&[flood])).await;
        assert!(next.is_ok(), "a turn given back was not taken");
        drop(next);
        drop(turns);
        assert!(gate.is_empty(), "addresses with nothing in flight are kept");
    }
}
