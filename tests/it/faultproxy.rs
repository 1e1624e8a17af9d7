//! A fault-injecting TCP proxy for the links between test nodes.
//!
//! One listener per directed link (node `from` dials node `to` through it).
//! Faults are set per *direction of bytes*: `set(a, b, mode)` acts on every
//! byte travelling from node `a` to node `b`, whichever side opened the
//! connection, so one-way partitions are real (requests get through, replies
//! do not, or the other way round).
//!
//! Modes switch at runtime: pass, drop (bytes are read and discarded, the
//! connection stays open: a blackhole), delay (every chunk is held back).
//! `cut` closes the live connections between two nodes at once. Leaving drop
//! mode cuts too, so no connection resumes with a gap in its byte stream.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What happens to bytes in one direction between two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Read and discard (the sender sees no error, the receiver nothing).
    Drop,
    /// Deliver after this long.
    Delay(Duration),
}

/// Counters that prove faults happened.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub bytes_passed: AtomicU64,
    pub bytes_dropped: AtomicU64,
    pub chunks_delayed: AtomicU64,
    pub connections_cut: AtomicU64,
}

/// A live connection: the two nodes it joins, and a sender that cuts it.
type Conn = ((usize, usize), watch::Sender<bool>);

#[derive(Default)]
struct Shared {
    modes: Mutex<HashMap<(usize, usize), Mode>>,
    /// Live connections by id.
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    stats: Stats,
}

impl Shared {
    fn mode(&self, from: usize, to: usize) -> Mode {
        *self
            .modes
            .lock()
            .expect("modes lock")
            .get(&(from, to))
            .unwrap_or(&Mode::Pass)
    }
}

/// The proxies of one test cluster. Dropping it stops every listener and connection.
pub struct FaultNet {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Default for FaultNet {
    fn default() -> Self {
        FaultNet::new()
    }
}

impl FaultNet {
    pub fn new() -> FaultNet {
        FaultNet {
            shared: Arc::default(),
            tasks: Vec::new(),
        }
    }

    /// Starts a proxy for connections node `from` opens to `target` (node
    /// `to`); returns the address `from` must dial instead. The proxy never
    /// takes a port in `avoid` (ports the nodes will listen on).
    pub async fn add_link(
        &mut self,
        from: usize,
        to: usize,
        target: SocketAddr,
        avoid: &[u16],
    ) -> std::io::Result<SocketAddr> {
        let mut held = Vec::new();
        let listener = loop {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            if !avoid.contains(&listener.local_addr()?.port()) {
                break listener;
            }
            held.push(listener); // keep it so the next bind gets another port
        };
        drop(held);
        let addr = listener.local_addr()?;
        let shared = self.shared.clone();
        self.tasks.push(tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    // A refused dial is what the caller would see without us.
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    serve(shared, from, to, inbound, outbound).await;
                });
            }
        }));
        Ok(addr)
    }

    /// Sets what happens to bytes from `from` to `to`.
    pub fn set(&self, from: usize, to: usize, mode: Mode) {
        let old = self
            .shared
            .modes
            .lock()
            .expect("modes lock")
            .insert((from, to), mode);
        if old == Some(Mode::Drop) && mode != Mode::Drop {
            self.cut(from, to);
        }
    }

    /// Drops everything between the two groups, both ways.
    pub fn partition(&self, side_a: &[usize], side_b: &[usize]) {
        for &a in side_a {
            for &b in side_b {
                self.set(a, b, Mode::Drop);
                self.set(b, a, Mode::Drop);
            }
        }
    }

    /// Back to pass everywhere (cutting links that were dropping).
    pub fn heal(&self) {
        let links: Vec<(usize, usize)> = self
            .shared
            .modes
            .lock()
            .expect("modes lock")
            .keys()
            .copied()
            .collect();
        for (a, b) in links {
            self.set(a, b, Mode::Pass);
        }
    }

    /// Closes every live connection between nodes `a` and `b` (either way).
    pub fn cut(&self, a: usize, b: usize) {
        let conns = self.shared.conns.lock().expect("conns lock");
        for ((x, y), stop) in conns.values() {
            if (*x, *y) == (a, b) || (*x, *y) == (b, a) {
                let _ = stop.send(true);
                self.shared
                    .stats
                    .connections_cut
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// A one-line summary of the counters.
    pub fn summary(&self) -> String {
        let s = &self.shared.stats;
        format!(
            "proxied connections {}, bytes passed {}, bytes dropped {}, chunks delayed {}, connections cut {}",
            s.connections.load(Ordering::Relaxed),
            s.bytes_passed.load(Ordering::Relaxed),
            s.bytes_dropped.load(Ordering::Relaxed),
            s.chunks_delayed.load(Ordering::Relaxed),
            s.connections_cut.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for (_, stop) in self.shared.conns.lock().expect("conns lock").values() {
            let _ = stop.send(true);
        }
    }
}

/// Pumps one connection both ways until either side closes or it is cut.
async fn serve(
    shared: Arc<Shared>,
    from: usize,
    to: usize,
    inbound: TcpStream,
    outbound: TcpStream,
) {
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    shared
        .conns
        .lock()
        .expect("conns lock")
        .insert(id, ((from, to), stop_tx));
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let up = pump(shared.clone(), from, to, in_read, out_write);
    let down = pump(shared.clone(), to, from, out_read, in_write);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = stop_rx.wait_for(|stop| *stop) => {}
    }
    shared.conns.lock().expect("conns lock").remove(&id);
    // Dropping the halves closes both sockets.
}

/// Copies bytes `src` -> `dst` (travelling from node `from` to node `to`),
/// applying the current mode to each chunk. Order is kept: a writer task
/// delivers chunks in arrival order, each no earlier than its due time.
async fn pump(
    shared: Arc<Shared>,
    from: usize,
    to: usize,
    mut src: tokio::net::tcp::OwnedReadHalf,
    mut dst: tokio::net::tcp::OwnedWriteHalf,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if dst.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = dst.shutdown().await;
    };
    let stats = shared.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match src.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let s = &stats.stats;
            match stats.mode(from, to) {
                Mode::Pass => {
                    s.bytes_passed.fetch_add(n as u64, Ordering::Relaxed);
                    let _ = tx.send((Instant::now(), buf[..n].to_vec()));
                }
                Mode::Drop => {
                    s.bytes_dropped.fetch_add(n as u64, Ordering::Relaxed);
                }
                Mode::Delay(d) => {
                    s.bytes_passed.fetch_add(n as u64, Ordering::Relaxed);
                    s.chunks_delayed.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send((Instant::now() + d, buf[..n].to_vec()));
                }
            }
        }
        // Dropping `tx` ends the writer after the queued chunks.
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(sock: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
        sock.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(wait, sock.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf)
    }

    #[tokio::test]
    async fn modes_switch_at_runtime() {
        let echo = echo_server().await;
        let mut net = FaultNet::new();
        let proxy = net.add_link(0, 1, echo, &[]).await.unwrap();
        let mut sock = TcpStream::connect(proxy).await.unwrap();
        let short = Duration::from_millis(300);
        assert_eq!(
            roundtrip(&mut sock, b"one", short).await.as_deref(),
            Some(&b"one"[..])
        );

        // One way: the request gets through, the echo does not.
        net.set(1, 0, Mode::Drop);
        assert_eq!(roundtrip(&mut sock, b"two", short).await, None);
        assert!(net.stats().bytes_dropped.load(Ordering::Relaxed) >= 3);

        // Healing a dropped direction cuts the connection: it must not
        // resume with a gap in the stream.
        net.heal();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

        // Delay: the echo arrives, later.
        let mut sock = TcpStream::connect(proxy).await.unwrap();
        net.set(0, 1, Mode::Delay(Duration::from_millis(400)));
        let started = std::time::Instant::now();
        assert_eq!(
            roundtrip(&mut sock, b"three", Duration::from_secs(3))
                .await
                .as_deref(),
            Some(&b"three"[..])
        );
        assert!(started.elapsed() >= Duration::from_millis(400));

        // Cut: the live connection closes, a new one works.
        net.set(0, 1, Mode::Pass);
        net.cut(0, 1);
        let read = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        let mut sock = TcpStream::connect(proxy).await.unwrap();
        assert_eq!(
            roundtrip(&mut sock, b"four", short).await.as_deref(),
            Some(&b"four"[..])
        );
    }
}
