//! [`WriteBuffered`]: a write buffer that exists only while there is something to write.
//!
//! A connection's writer task writes every frame it finds queued, then flushes (see
//! [`crate::split`]), so a burst of frames becomes few system calls. A `tokio::io::BufWriter`
//! does that with a buffer allocated for the connection's whole life: 8 KiB for each of tens of
//! thousands of mostly idle connections. Here the buffer is allocated by the first write after a
//! flush and freed by the flush that empties it, so an idle connection holds none.
//!
//! Writes of at least [`CAPACITY`] bytes bypass the buffer (after what it holds), as they would
//! with a `BufWriter`, vectored ones (a frame's header and payload) in one system call; reads pass
//! straight through.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before they are written, at most.
pub const CAPACITY: usize = 8 * 1024;

/// A stream whose writes are gathered until a flush; see the module docs.
#[derive(Debug)]
pub struct WriteBuffered<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    written: usize,
}

impl<S> WriteBuffered<S> {
    pub fn new(inner: S) -> Self {
        WriteBuffered { inner, buf: Vec::new(), written: 0 }
    }

    /// Bytes of buffer held right now (0 once flushed).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncWrite + Unpin> WriteBuffered<S> {
    /// Writes out everything gathered; the buffer is kept (see `poll_flush` for its release).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteBuffered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() + data.len() > CAPACITY {
            ready!(this.poll_write_out(cx))?;
        }
        if data.len() >= CAPACITY {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve_exact(CAPACITY);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buf.len() + total > CAPACITY {
            ready!(this.poll_write_out(cx))?;
        }
        if total >= CAPACITY {
            // A frame's header and large payload go out in one system call, as they came.
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve_exact(CAPACITY);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        // Nothing is waiting: the buffer goes, and the next burst allocates its own.
        this.buf = Vec::new();
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        this.buf = Vec::new();
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteBuffered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn gathers_writes_until_a_flush_then_holds_no_buffer() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut w = WriteBuffered::new(near);
        assert_eq!(w.buffer_capacity(), 0);
        w.write_all(b"hello ").await.unwrap();
        w.write_all(b"world").await.unwrap();
        assert_eq!(w.buffer_capacity(), CAPACITY);
        // Nothing has reached the peer before the flush.
        let mut probe = [0u8; 1];
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), far.read(&mut probe)).await.is_err());
        w.flush().await.unwrap();
        assert_eq!(w.buffer_capacity(), 0);
        let mut got = [0u8; 11];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }

    #[tokio::test]
    async fn large_writes_go_straight_through_after_what_is_gathered() {
        let (near, mut far) = tokio::io::duplex(256 * 1024);
        let mut w = WriteBuffered::new(near);
        w.write_all(b"head").await.unwrap();
        let big = vec![7u8; CAPACITY * 3];
        w.write_all(&big).await.unwrap();
        w.write_all(b"tail").await.unwrap();
        w.flush().await.unwrap();
        let mut got = vec![0u8; 4 + big.len() + 4];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..4 + big.len()].iter().all(|&b| b == 7));
        assert_eq!(&got[4 + big.len()..], b"tail");
    }

    #[tokio::test]
    async fn vectored_writes_are_gathered_or_passed_through_whole() {
        use std::io::IoSlice;
        let (near, mut far) = tokio::io::duplex(256 * 1024);
        let mut w = WriteBuffered::new(near);
        assert!(w.is_write_vectored());
        let n = w.write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")]).await.unwrap();
        assert_eq!(n, 4);
        let big = vec![9u8; CAPACITY];
        let mut sent = 4;
        while sent < 4 + 2 + big.len() {
            let done = sent - 4;
            let slices = if done < 2 {
                [IoSlice::new(&b"hd"[done..]), IoSlice::new(&big)]
            } else {
                [IoSlice::new(b""), IoSlice::new(&big[done - 2..])]
            };
            sent += w.write_vectored(&slices).await.unwrap();
        }
        w.flush().await.unwrap();
        let mut got = vec![0u8; 4 + 2 + big.len()];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..6], b"abcdhd");
        assert!(got[6..].iter().all(|&b| b == 9));
    }

    #[tokio::test]
    async fn a_slow_peer_gets_every_byte_in_order() {
        // A pipe smaller than one write: every write_out is partial and resumes where it stopped.
        let (near, mut far) = tokio::io::duplex(100);
        let mut w = WriteBuffered::new(near);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut sent = Vec::new();
        for i in 0..2_000u32 {
            let chunk = i.to_be_bytes().repeat(1 + (i as usize % 7));
            w.write_all(&chunk).await.unwrap();
            sent.extend_from_slice(&chunk);
            if i % 97 == 0 {
                w.flush().await.unwrap();
            }
        }
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), sent);
    }
}
