//! A bound on the monitor's open gRPC connections, so a flood of
//! connections (or of clients that connect and never finish a TLS
//! handshake) cannot exhaust its file descriptors or memory. Past the
//! bound a new connection is closed at once; the keepers' connections,
//! opened long before, are unaffected.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

/// A connection holding one of the [`MAX_CONNECTIONS`] permits.
pub struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
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
) -> impl Stream<Item = Result<Limited, std::io::Error>> {
    let permits = Arc::new(Semaphore::new(max));
    let mut warned = false;
    TcpListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Ok(stream) => match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                warned = false;
                let _ = stream.set_nodelay(true);
                Some(Ok(Limited {
                    stream,
                    _permit: permit,
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
