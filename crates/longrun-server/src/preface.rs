//! Telling HTTP/2 from HTTP/1.1 on one port by a connection's first bytes.
//!
//! hyper-util's `auto` builder does the same, but hands the bytes it looked
//! at to hyper as a read of their own; hyper's next read, for the rest of
//! the request, then finds less than 8 KiB free and doubles its read buffer
//! to 16 KiB, which a connection keeps for as long as it lives (with 10,000
//! Waits open, 80 MB: BENCHMARKS.md). [`Sniffed`] gives the bytes back and
//! reads on in the same call, so hyper's first read holds the whole request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection begins with (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// A stream whose first bytes were read to tell its protocol; reads give
/// them back first.
#[derive(Debug)]
pub(crate) struct Sniffed<S> {
    inner: S,
    head: [u8; PREFACE.len()],
    start: usize,
    end: usize,
}

/// Reads until the first bytes are HTTP/2's preface in full or stop
/// matching it (HTTP/1.1, or anything else: hyper's HTTP/1 parser answers
/// that). A peer that closes first is HTTP/1 too; hyper then sees the end.
pub(crate) async fn sniff<S: AsyncRead + Unpin>(mut inner: S) -> io::Result<(Protocol, Sniffed<S>)> {
    let mut head = [0; PREFACE.len()];
    let mut end = 0;
    let protocol = loop {
        let read = inner.read(&mut head[end..]).await?;
        end += read;
        if read == 0 || head[..end] != PREFACE[..end] {
            break Protocol::Http1;
        }
        if end == PREFACE.len() {
            break Protocol::Http2;
        }
    };
    Ok((
        protocol,
        Sniffed {
            inner,
            head,
            start: 0,
            end,
        },
    ))
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let given = (this.end - this.start).min(buf.remaining());
        buf.put_slice(&this.head[this.start..this.start + given]);
        this.start += given;
        if this.start == this.end && buf.remaining() > 0 {
            // Whatever has arrived after the head goes into the same read.
            // Nothing yet (Pending) is fine: the head is an answer, and the
            // waker stays registered. An error shows again on the next read.
            let filled = buf.filled().len();
            if let Poll::Ready(Err(_)) = Pin::new(&mut this.inner).poll_read(cx, buf) {
                buf.set_filled(filled);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, duplex};

    use super::*;

    /// Sniffs what `chunks` send, then reads the rest as hyper would.
    async fn sniffed(chunks: &[&[u8]]) -> (Protocol, Vec<u8>) {
        let (mut client, server) = duplex(1024);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|chunk| chunk.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let (protocol, mut stream) = sniff(server).await.unwrap();
        writer.await.unwrap();
        let mut seen = Vec::new();
        stream.read_to_end(&mut seen).await.unwrap();
        (protocol, seen)
    }

    #[tokio::test]
    async fn an_http1_request_is_given_back_whole() {
        let request = b"POST /v1/operations/a:wait HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(sniffed(&[request]).await, (Protocol::Http1, request.to_vec()));
    }

    #[tokio::test]
    async fn the_preface_in_pieces_is_http2() {
        let (protocol, seen) = sniffed(&[b"PRI * HTTP", b"/2.0\r\n\r\nSM\r\n", b"\r\nframes"]).await;
        assert_eq!(protocol, Protocol::Http2);
        assert_eq!(seen, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nframes");
    }

    #[tokio::test]
    async fn a_request_that_starts_like_the_preface_is_http1() {
        let request = b"PRIVATE / HTTP/1.1\r\n\r\n";
        assert_eq!(
            sniffed(&[b"PRI", request.split_at(3).1]).await,
            (Protocol::Http1, request.to_vec())
        );
    }

    #[tokio::test]
    async fn a_peer_that_closes_early_is_given_back_what_it_sent() {
        assert_eq!(sniffed(&[b"PRI * "]).await, (Protocol::Http1, b"PRI * ".to_vec()));
        assert_eq!(sniffed(&[]).await, (Protocol::Http1, Vec::new()));
    }
}
