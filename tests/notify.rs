//! The inbox's notifications (src/server/notify.rs) against a real HTTP receiver on
//! loopback (tests/common/receiver.rs): JSON POSTs with a Slack-compatible `text`,
//! retries with backoff on 5xx and unreachable receivers, none on another 4xx, a
//! bounded queue that drops rather than waits, and every failure counted. The server's
//! whole loop (requests recorded, approved, rejected, expired, notified once) is in
//! tests/e2e_inbox.rs.

mod common;

use std::time::{Duration, Instant};

use blastguard::approval::request::RequestSpec;
use blastguard::server::notify::{Event, EventKind, Notifier, NotifyMetrics, Options};
use common::receiver::Receiver;
use prometheus::{Encoder as _, Registry, TextEncoder};

fn spec() -> RequestSpec {
    RequestSpec {
        display: "Deployment prod/api".into(),
        operation: "apply".into(),
        requester: "system:serviceaccount:ai-agents:bot".into(),
        rule: "protected".into(),
        required_approvals: 2,
        summary: "replicas 2 → 5".into(),
        ..RequestSpec::default()
    }
}

fn event(kind: EventKind, name: &str) -> Event {
    Event::new(kind, name, "blastguard", &spec(), "0/2", "")
}

fn options(url: String) -> Options {
    let mut o = Options::new(url);
    o.backoff = Duration::from_millis(50);
    o.timeout = Duration::from_secs(2);
    o.attempts = 3;
    o
}

fn metrics(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_posted_as_slack_json_and_a_5xx_is_retried() {
    let receiver = Receiver::start(&[503, 500]);
    let registry = Registry::new();
    let notifier = Notifier::start(options(receiver.url()), NotifyMetrics::new(&registry)).unwrap();
    notifier.send(event(EventKind::New, "deployment-prod-api-apply-1"));
    notifier.send(event(EventKind::Rejected, "deployment-prod-api-apply-1"));
    tokio::task::spawn_blocking(move || {
        wait("two deliveries", || receiver.bodies().len() == 2);
        let bodies = receiver.bodies();
        assert_eq!(bodies[0]["event"], "new");
        assert_eq!(bodies[1]["event"], "rejected");
        let text = bodies[0]["text"].as_str().unwrap();
        assert!(text.contains("Deployment prod/api"), "{text}");
        assert!(text.contains("waits for approval"), "{text}");
        assert!(
            text.contains("kubectl blastguard show deployment-prod-api-apply-1"),
            "{text}"
        );
        assert_eq!(bodies[0]["request"], "deployment-prod-api-apply-1");
        assert_eq!(bodies[0]["signed"], "0/2");
        // Two failed tries, then the first event; the second at once.
        assert_eq!(receiver.tries(), 4);
        let text = metrics(&registry);
        assert!(
            text.contains("blastguard_notification_failures_total{reason=\"http_status\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("blastguard_notifications_total{event=\"new\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("blastguard_notification_failures_total{reason=\"given_up\"} 0"),
            "{text}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_not_retried_and_an_unreachable_receiver_is_given_up() {
    let refusing = Receiver::start(&[400]);
    let registry = Registry::new();
    let notifier = Notifier::start(options(refusing.url()), NotifyMetrics::new(&registry)).unwrap();
    notifier.send(event(EventKind::Expired, "a"));
    // A port nobody listens on: connection refused, every try.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let registry2 = Registry::new();
    let unreachable = Notifier::start(options(url), NotifyMetrics::new(&registry2)).unwrap();
    unreachable.send(event(EventKind::Approved, "b"));
    tokio::task::spawn_blocking(move || {
        wait("the refusal counted", || {
            metrics(&registry)
                .contains("blastguard_notification_failures_total{reason=\"given_up\"} 1")
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(refusing.tries(), 1, "a 400 is not retried");
        assert!(refusing.bodies().is_empty());
        wait("the unreachable receiver given up", || {
            metrics(&registry2)
                .contains("blastguard_notification_failures_total{reason=\"given_up\"} 1")
        });
        let text = metrics(&registry2);
        assert!(
            text.contains("blastguard_notification_failures_total{reason=\"unreachable\"} 3"),
            "{text}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_instead_of_waiting() {
    // The sender is stuck retrying an unreachable receiver with a long backoff.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let mut o = options(url);
    o.queue = 1;
    o.backoff = Duration::from_secs(30);
    let registry = Registry::new();
    let notifier = Notifier::start(o, NotifyMetrics::new(&registry)).unwrap();
    let start = Instant::now();
    for i in 0..5 {
        notifier.send(event(EventKind::New, &format!("r{i}")));
    }
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "send never waits"
    );
    let text = metrics(&registry);
    let dropped: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("blastguard_notification_failures_total{reason=\"queue_full\"} ")
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped >= 3.0, "{text}");
}

#[tokio::test]
async fn a_url_that_is_not_http_is_refused() {
    for bad in ["ftp://example.com/x", "not a url", "/relative"] {
        let registry = Registry::new();
        let err = Notifier::start(Options::new(bad.into()), NotifyMetrics::new(&registry))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--notify-url"), "{bad}: {err}");
    }
}
