//! The benchmarks' SCIM load: clients that each hold one HTTP/1.1 keep-alive connection and
//! send requests prepared before the clock starts, as a load generator such as `wrk` does.
//! The clients share the two cores with the service they measure; a general HTTP client
//! (connection pool, URL parsing, JSON built and parsed per request) took a good part of
//! them. Every answer is still read whole and checked.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head and body a client reads; a SCIM answer here is well under it.
const MAX_RESPONSE: usize = 1024 * 1024;

/// One answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A request ready to send: its bytes and what its answer must be.
pub struct Prepared {
    bytes: Vec<u8>,
    check: fn(&Answer) -> anyhow::Result<()>,
}

impl Prepared {
    /// A request for the SCIM service at `addr` with a bearer `token` and, when given, a JSON
    /// body; `check` says whether its answer is the one a working service gives.
    pub fn new(
        method: &str,
        addr: SocketAddr,
        path: &str,
        token: &str,
        body: Option<&str>,
        check: fn(&Answer) -> anyhow::Result<()>,
    ) -> Self {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nUser-Agent: unseat-bench\r\n"
        );
        if let Some(body) = body {
            head.push_str(&format!("Content-Type: application/scim+json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or("").as_bytes());
        Self { bytes, check }
    }
}

/// One client's connection.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::with_capacity(8192) })
    }

    /// Sends `request` and reads its whole answer.
    pub async fn call(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        self.stream.write_all(request).await?;
        loop {
            if let Some((answer, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(answer);
            }
            if self.buf.len() > MAX_RESPONSE {
                bail!("an answer larger than {MAX_RESPONSE} bytes");
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the service closed the connection before answering");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A complete answer at the start of `buf` and the bytes it takes, or `None` while it is
/// still arriving.
fn parse(buf: &[u8]) -> anyhow::Result<Option<(Answer, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf).context("a malformed HTTP answer")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("an HTTP answer without a status")?;
    let mut length = 0usize;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .context("a bad Content-Length")?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a chunked answer (these clients read only answers with a Content-Length)");
        }
    }
    if buf.len() < head + length {
        return Ok(None);
    }
    Ok(Some((Answer { status, body: buf[head..head + length].to_vec() }, head + length)))
}

/// Rate over a whole run and latency percentiles.
pub struct Figures {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Figures {
    /// Figures of `n` operations that took `elapsed` in all, with their latencies.
    pub fn of(n: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        Self { rate: n as f64 / elapsed.as_secs_f64(), p50: pct(&latencies, 50), p99: pct(&latencies, 99) }
    }
}

/// The `p`th percentile of `sorted` (zero when empty).
pub(crate) fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p) / 100]
}

/// Sends every request in `requests` from `clients` clients at once, each on its own
/// connection (opened before the clock starts), each taking the next request as soon as its
/// last one was answered. Fails on the first answer its check refuses.
pub async fn run(addr: SocketAddr, clients: usize, requests: Vec<Prepared>) -> anyhow::Result<Figures> {
    let n = requests.len();
    let mut connections = Vec::new();
    for _ in 0..clients.clamp(1, n.max(1)) {
        connections.push(Connection::open(addr).await?);
    }
    let requests = Arc::new(requests);
    drive(connections, n, move |mut conn, i| {
        let requests = requests.clone();
        async move {
            let request = &requests[i];
            let answer = conn.call(&request.bytes).await?;
            (request.check)(&answer).with_context(|| format!("request {i}"))?;
            Ok(conn)
        }
    })
    .await
}

/// Runs operations `0..n` over `clients` at once (each ready before the clock starts, each in
/// a task of its own), every client taking the next operation as soon as its last one is done;
/// `op` gets the client back with the operation's index and returns it. Rate over the whole
/// run and each operation's latency; fails on the first operation that fails.
pub async fn drive<C, F, Fut>(clients: Vec<C>, n: usize, op: F) -> anyhow::Result<Figures>
where
    C: Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<C>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (next, op) = (next.clone(), op.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return anyhow::Ok(latencies);
                    }
                    let t = Instant::now();
                    client = op(client, i).await?;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for worker in workers {
        latencies.extend(worker.await.context("a client stopped")??);
    }
    Ok(Figures::of(n, started.elapsed(), latencies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_complete_only_with_its_whole_body() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert!(parse(&full[..cut]).unwrap().is_none(), "complete after {cut} bytes");
        }
        let (answer, used) = parse(full).unwrap().unwrap();
        assert_eq!((answer.status, answer.body.as_slice(), used), (200, &b"hello"[..], full.len()));
    }

    #[test]
    fn two_answers_in_one_read_are_taken_one_at_a_time() {
        let both = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let (first, used) = parse(both).unwrap().unwrap();
        assert_eq!((first.status, first.body.len()), (204, 0));
        let (second, _) = parse(&both[used..]).unwrap().unwrap();
        assert_eq!((second.status, second.body.as_slice()), (200, &b"{}"[..]));
    }

    #[test]
    fn chunked_and_malformed_answers_are_errors() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse(b"NOT HTTP\r\n\r\n").is_err());
    }
}
