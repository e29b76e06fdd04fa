//! Parking idle HTTP/1.1 connections: a keep-alive connection that has had nothing to do for
//! [`PARK_AFTER`] gives its hyper connection up — with it hyper's read and write buffers,
//! 8 KiB each, and its cached header map — and keeps only its socket until the client's next
//! bytes arrive; then a new hyper connection takes the socket over. nginx does the same
//! with its request buffers (an idle keep-alive connection of its costs next to nothing).
//!
//! hyper has no way to hand a live connection's socket back, so the socket is wrapped
//! ([`Parkable`]): asked to park (by the connection's watchdog), it ends the next read
//! that finds nothing to read with an end of file, which hyper takes for the client closing
//! its side, and ignores hyper's shutdown after it; the hyper connection ends, and
//! `into_parts` gives the socket back, with the bytes hyper had read and not yet parsed (the
//! start of a head, rare), which the next hyper connection reads first. Nothing is lost:
//! the end of file is only given when a read would wait, no response bytes are waiting to
//! go out, and no request is in flight — its body included ([`crate::body::ClientBody`]), as
//! an end of file in the middle of a body would cut it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::activity::Activity;

/// How long an HTTP/1.1 connection has had nothing in flight before it is parked. Not at
/// once, as nginx does: a client sending request after request would have its connection
/// parked and a new hyper connection made between each two. Short, so that a burst of new
/// connections going idle together is parked before the next has taken memory of its own
/// (2 000 opened 200 at a time, then idle, measured by hand: 1 s left 14.7 KiB a connection
/// resident, 100 ms 8.5, 10 ms 4.5), while a busy connection's watchdog does not wake
/// often to find it busy (every 100 ms, and once a second once found busy twice in a row).
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// A client socket whose readiness can be awaited without reading from it, so a parked
/// connection leaves the client's bytes in the kernel until a hyper connection reads them.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when bytes (or the client's end) are there to read.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Socket for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// TLS: parked only when a read of the session found nothing (no plaintext held by it, the
/// socket read dry), so the socket's readiness is what says more has come.
impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// A client socket as hyper's HTTP/1.1 server reads and writes it, which can end the hyper
/// connection without closing the socket (module doc).
pub struct Parkable<I> {
    io: I,
    /// Its connection's: whether to park.
    activity: Arc<Activity>,
    /// Bytes read before the connection was parked and not parsed (the start of a head),
    /// read again by the next hyper connection before the socket.
    unread: Bytes,
    /// The last write or flush could not finish: hyper still has response bytes to send,
    /// and a connection in the middle of a response is not parked.
    write_blocked: bool,
}

impl<I: Socket> Parkable<I> {
    pub fn new(io: I, activity: Arc<Activity>) -> Self {
        Parkable {
            io,
            activity,
            unread: Bytes::new(),
            write_blocked: false,
        }
    }

    /// The socket back from a parked hyper connection, with the bytes it had read and not
    /// parsed. They are copied: hyper's read buffer is what parking frees.
    pub fn parked(mut self, unparsed: Bytes) -> Self {
        self.unread = if unparsed.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&unparsed)
        };
        self
    }

    /// Its hyper connection was ended by parking (rather than by the client or an error).
    pub fn is_parked(&self) -> bool {
        self.activity.park.is_parked()
    }

    /// A new hyper connection serves it.
    pub fn serve(&self) {
        self.activity.park.serve();
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_read_ready(cx)
    }
}

/// The TCP socket under a client's upgraded connection (the server's [`Parkable`] under
/// hyper's layers), with the bytes read from it and not yet used, in order: what hyper read
/// past the handshake, then what the wrapper still held. The connection back when it is
/// not plain TCP.
pub fn upgraded_socket(upgraded: Upgraded) -> Result<(TcpStream, Bytes), Upgraded> {
    let parts = upgraded.downcast::<TokioIo<Parkable<TcpStream>>>()?;
    let socket = parts.io.into_inner();
    let read = match (parts.read_buf.is_empty(), socket.unread.is_empty()) {
        (_, true) => parts.read_buf,
        (true, false) => socket.unread,
        (false, false) => [parts.read_buf, socket.unread].concat().into(),
    };
    Ok((socket.io, read))
}

impl<I: Socket> AsyncRead for Parkable<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if this.write_blocked || !this.activity.park.is_asked() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                // Nothing to read: an end of file for hyper, which ends its connection.
                this.activity.park.end();
                Poll::Ready(Ok(()))
            }
            read => {
                // Bytes came (a request after all), or the client's end: serve on.
                this.activity.park.serve();
                read
            }
        }
    }
}

impl<I: Socket> AsyncWrite for Parkable<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_blocked = written.is_pending();
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.write_blocked = written.is_pending();
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        this.write_blocked = flushed.is_pending();
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.park.is_parked() {
            // hyper closing what it took for a closed connection: the socket stays open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
