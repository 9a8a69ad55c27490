//! A notification receiver on loopback: a plain HTTP/1.1 server that keeps every JSON
//! body POSTed to it and answers with the statuses it is told to (so a test can make
//! the first tries fail and see the retries). It stands in for a Slack incoming
//! webhook; nothing leaves the machine.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The receiver, listening until the test process ends.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
    tries: Arc<Mutex<usize>>,
}

impl Receiver {
    /// Starts one on 127.0.0.1; it answers the first tries with `failures` in order,
    /// then 200.
    pub fn start(failures: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let statuses = Arc::new(Mutex::new(failures.to_vec()));
        let tries: Arc<Mutex<usize>> = Arc::default();
        let (b, s, t) = (bodies.clone(), statuses.clone(), tries.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                // One request per connection is enough; answer with Connection: close.
                let mut length = 0usize;
                let mut line = String::new();
                let mut first = true;
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if first {
                        first = false;
                        continue;
                    }
                    let trimmed = line.trim_end();
                    if trimmed.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = trimmed.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                *t.lock().unwrap() += 1;
                let status = {
                    let mut statuses = s.lock().unwrap();
                    if statuses.is_empty() {
                        200
                    } else {
                        statuses.remove(0)
                    }
                };
                if status == 200
                    && let Ok(value) = serde_json::from_slice(&body)
                {
                    b.lock().unwrap().push(value);
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            addr,
            bodies,
            statuses,
            tries,
        }
    }

    /// The URL to give `--notify-url`.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/blastguard", self.addr)
    }

    /// Every body accepted so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// How many POSTs arrived, failed ones included.
    pub fn tries(&self) -> usize {
        *self.tries.lock().unwrap()
    }

    /// Whether an accepted body has `event` for `request`.
    pub fn saw(&self, event: &str, request: &str) -> bool {
        self.bodies()
            .iter()
            .any(|b| b["event"] == event && b["request"] == request)
    }
}
