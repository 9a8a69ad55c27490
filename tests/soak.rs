//! The soak in the test suite: two minutes of mixed load on the real binary while its
//! certificate, policy and allowed_signers change underneath (the driver is
//! examples/soak/driver.rs; `scripts/soak.sh` runs it for longer). Every well-formed
//! review must be answered exactly right, every reload must take effect (or an invalid
//! file be refused), and the server's memory and file descriptors must not grow
//! beyond a generous bound. `SOAK_SECONDS` changes the length.
//!
//! The clients stand in for the API server, as in tests/server_*.rs: AdmissionReview v1
//! over TLS verified against the CA, `POST /validate?timeout=10s`, HTTP/2 and HTTP/1.1.

#[path = "../examples/soak/driver.rs"]
mod driver;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_mixed_load_while_files_change_underneath() {
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let report = driver::run(driver::Options {
        blastguard: env!("CARGO_BIN_EXE_blastguard").into(),
        duration: Duration::from_secs(seconds),
        rate: 100.0,
        workers: 4,
    })
    .await;
    eprintln!("{report}");
    assert!(report.passed(), "{report}");
    assert!(
        report.well_formed() >= seconds * 10,
        "too few reviews were sent: {report}"
    );
    assert!(report.malformed > 0 && report.cert_rotations > 0 && report.policy_writes > 0);
    // Generous: the state kept per requester and workload is bounded (10,000 entries
    // each), allocator arenas settle; a leak per request would pass these quickly.
    let rss_bound = (report.rss_start_kb * 2).max(report.rss_start_kb + 64 * 1024);
    assert!(
        report.rss_end_kb <= rss_bound,
        "RSS grew from {} kB to {} kB",
        report.rss_start_kb,
        report.rss_end_kb
    );
    assert!(
        report.fds_end <= report.fds_start + 16,
        "open file descriptors grew from {} to {}",
        report.fds_start,
        report.fds_end
    );
}
