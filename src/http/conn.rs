//! Connections as the server accepts them: the client's address for every connection, plain
//! TCP with Nagle's algorithm off, and a lingering close.
//!
//! A lingering close (as nginx and Apache do it): when the server closes a connection, it
//! first shuts down its sending side, so the client sees the end of the answer, then reads
//! and discards what the client still sends, for at most [`LINGER_TIME`] and
//! [`LINGER_BYTES`], before it lets go of the socket. Closing a socket with unread bytes
//! makes the kernel answer with RST, and a client still writing its request body then sees
//! "connection reset" or "broken pipe" instead of the answer it was sent.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The longest a closing connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// The most a closing connection reads and discards.
pub const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// The client's address, recorded for every connection whatever the listener (plain TCP or
/// TLS) so that logs and login throttling see it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PlainListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, PlainListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Plain TCP, with Nagle's algorithm off and a lingering close on every connection.
pub struct PlainListener(pub TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = Lingering<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = tcp.set_nodelay(true);
        (Lingering::new(tcp), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

enum Closing {
    Open,
    Draining {
        deadline: Pin<Box<tokio::time::Sleep>>,
        left: u64,
    },
    Closed,
}

/// A connection whose shutdown lingers (see the module comment).
pub struct Lingering<T> {
    inner: T,
    closing: Closing,
}

impl<T> Lingering<T> {
    pub fn new(inner: T) -> Self {
        Lingering {
            inner,
            closing: Closing::Open,
        }
    }
}

impl<T: AsyncRead + Unpin> Lingering<T> {
    /// Reads and discards until the client is done, or the time or byte budget is spent.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Closing::Draining { deadline, left } = &mut self.closing else {
            return Poll::Ready(());
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            if *left == 0 || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    *left = left.saturating_sub(rb.filled().len() as u64);
                }
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.closing {
                Closing::Open => {
                    let shut = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
                    this.closing = match shut {
                        Ok(()) => Closing::Draining {
                            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                            left: LINGER_BYTES,
                        },
                        Err(_) => Closing::Closed,
                    };
                    shut?;
                }
                Closing::Draining { .. } => {
                    ready!(this.poll_drain(cx));
                    this.closing = Closing::Closed;
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // The server answers and closes while the client is still sending 8 MiB: the client's
    // writes all succeed and it then reads the whole answer (without the lingering close it
    // gets a reset instead).
    #[tokio::test]
    async fn the_answer_survives_a_client_still_sending() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = Lingering::new(tcp);
            let mut first = [0u8; 1024];
            let _ = conn.read(&mut first).await.unwrap();
            conn.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope")
                .await
                .unwrap();
            conn.shutdown().await.unwrap();
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let body = vec![7u8; 8 << 20];
        client
            .write_all(b"POST / HTTP/1.1\r\ncontent-length: 8388608\r\n\r\n")
            .await
            .unwrap();
        client
            .write_all(&body)
            .await
            .expect("no reset while sending");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.ends_with(b"nope"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        server.await.unwrap();
    }
}
