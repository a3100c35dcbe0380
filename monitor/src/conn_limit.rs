//! Bounds on the monitor's open gRPC connections, so a flood of
//! connections (or of clients that connect and never finish a TLS
//! handshake, or never present a credential) cannot exhaust its file
//! descriptors or lock the keepers out:
//!
//! - at most [`MAX_CONNECTIONS`] in all and [`MAX_PER_SOURCE`] from one
//!   address; past either a new connection is closed at once, and the
//!   keepers' connections, opened long before, are unaffected;
//! - a connection that has not carried one request with a valid
//!   credential within [`PROOF_DEADLINE`] is closed, so idle or refused
//!   connections give their places back.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Open connections the monitor serves at once. A keeper holds two (its
/// reports and its Watch stream), a CLI command one: thousands of nodes
/// fit, a connection flood does not, and it stays well under the usual
/// limit of 1024 open files.
pub const MAX_CONNECTIONS: usize = 512;

/// Open connections from one address. A machine runs a keeper or two and
/// some CLI commands; one host holding every place is what this stops.
pub const MAX_PER_SOURCE: usize = 64;

/// How long a connection may stay open before one of its requests
/// presented a valid credential. A keeper or the CLI sends its first
/// request right after connecting; the TLS handshake alone may take 5 s
/// (its own timeout), and 10 s leaves room for a loaded machine. A
/// connection that only carries refused requests is closed too: it is
/// no client of ours, or one whose credential was revoked.
pub const PROOF_DEADLINE: Duration = Duration::from_secs(10);

/// What the accept loop and the authorisation layer share: the open
/// connections per address, and the flag of each not yet proved.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    per_source: HashMap<IpAddr, usize>,
    unproved: HashMap<SocketAddr, Arc<AtomicBool>>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request on the connection from `peer` presented a valid
    /// credential: the connection stays.
    pub fn prove(&self, peer: SocketAddr) {
        if let Some(flag) = self.lock().unproved.remove(&peer) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Takes a place for a connection from `peer`, or `None` when its
    /// address holds [`MAX_PER_SOURCE`] already.
    fn admit(&self, peer: SocketAddr) -> Option<Arc<AtomicBool>> {
        let mut state = self.lock();
        let open = state.per_source.entry(peer.ip()).or_default();
        if *open >= MAX_PER_SOURCE {
            return None;
        }
        *open += 1;
        let flag = Arc::new(AtomicBool::new(false));
        state.unproved.insert(peer, flag.clone());
        Some(flag)
    }

    fn release(&self, peer: SocketAddr) {
        let mut state = self.lock();
        state.unproved.remove(&peer);
        if let Some(open) = state.per_source.get_mut(&peer.ip()) {
            *open -= 1;
            if *open == 0 {
                state.per_source.remove(&peer.ip());
            }
        }
    }
}

/// A connection holding one of the [`MAX_CONNECTIONS`] permits and one of
/// its address's places.
pub struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    peer: SocketAddr,
    gate: Arc<Gate>,
    proved: Arc<AtomicBool>,
    /// Until the connection is proved; `None` after.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drop for Limited {
    fn drop(&mut self) {
        self.gate.release(self.peer);
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Polled whenever the connection waits for bytes, so the timer's
        // waker is registered alongside the socket's.
        let this = &mut *self;
        if this.deadline.is_some() && this.proved.load(Ordering::Acquire) {
            this.deadline = None;
        }
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(peer = %this.peer, "closing a connection that presented no valid credential within {PROOF_DEADLINE:?}");
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no valid credential within the deadline",
                )));
            }
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepted connections, each within the bound; those past it are
/// closed (logged once per burst). Accept errors (a reset before accept)
/// are logged and skipped: they must not stop the server.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    gate: Arc<Gate>,
) -> impl Stream<Item = Result<Limited, std::io::Error>> {
    let permits = Arc::new(Semaphore::new(max));
    let mut warned = false;
    let mut warned_sources = std::collections::HashSet::new();
    TcpListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Ok(stream) => match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                warned = false;
                let peer = stream.peer_addr().ok()?;
                let Some(proved) = gate.admit(peer) else {
                    // Logged once per address (and the set bounded): a
                    // flood must not fill the log.
                    if warned_sources.len() < 1024 && warned_sources.insert(peer.ip()) {
                        tracing::warn!(
                            "{} holds {MAX_PER_SOURCE} gRPC connections: closing its new ones until some end",
                            peer.ip()
                        );
                    }
                    return None;
                };
                let _ = stream.set_nodelay(true);
                Some(Ok(Limited {
                    stream,
                    _permit: permit,
                    peer,
                    gate: gate.clone(),
                    proved,
                    deadline: Some(Box::pin(tokio::time::sleep(PROOF_DEADLINE))),
                }))
            }
            Err(_) => {
                if !warned {
                    tracing::warn!(
                        "{max} gRPC connections are open: closing new ones until some end"
                    );
                    warned = true;
                }
                None
            }
        },
        Err(e) => {
            tracing::warn!("accept a gRPC connection: {e}");
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listen() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unproved_connection_is_closed_at_the_deadline_a_proved_one_stays() {
        let (l, addr) = listen().await;
        let gate = Arc::new(Gate::default());
        let mut accepted = Box::pin(incoming(l, 8, gate.clone()));
        let _idle = TcpStream::connect(addr).await.unwrap();
        let mut idle_side = accepted.next().await.unwrap().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut proved_side = accepted.next().await.unwrap().unwrap();
        gate.prove(client.local_addr().unwrap());

        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 8];
        let e = idle_side.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= PROOF_DEADLINE);

        // Past the deadline, the proved one still carries bytes.
        client.write_all(b"hello").await.unwrap();
        let n = proved_side.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let (l, addr) = listen().await;
        let gate = Arc::new(Gate::default());
        let mut accepted = Box::pin(incoming(l, MAX_PER_SOURCE + 10, gate.clone()));
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..MAX_PER_SOURCE {
            clients.push(TcpStream::connect(addr).await.unwrap());
            served.push(accepted.next().await.unwrap().unwrap());
        }
        // One more from the same address: closed at once, never yielded.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let next = tokio::time::timeout(Duration::from_millis(300), accepted.next()).await;
        assert!(next.is_err(), "a connection past the share was served");
        assert_eq!(extra.read(&mut buf).await.unwrap_or(0), 0);
        // One ends: the address may connect again.
        served.pop();
        clients.pop();
        let _again = TcpStream::connect(addr).await.unwrap();
        accepted.next().await.unwrap().unwrap();
    }
}
