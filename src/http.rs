//! HTTP/1.1 on glommio sockets, through hyper.
//!
//! hyper does the protocol (keep-alive, chunked bodies, header limits, 400/431 on malformed
//! requests); [`Io`] adapts glommio's `TcpStream` to hyper's IO traits. Each connection runs as
//! a task on the shard that accepted it and is closed gracefully at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::shard::Shard;

/// Largest slice handed to a socket read; hyper's buffer may be larger.
const READ_CHUNK: usize = 16 * 1024;

/// A glommio `TcpStream` speaking hyper's IO traits.
pub struct Io(pub glommio::net::TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: we initialise the prefix we hand out before viewing it as `[u8]`, and only
        // advance the cursor by the number of bytes the read reports as filled.
        unsafe {
            let uninit = buf.as_mut();
            let n = uninit.len().min(READ_CHUNK);
            let slice: &mut [MaybeUninit<u8>] = &mut uninit[..n];
            slice.iter_mut().for_each(|b| {
                b.write(0);
            });
            let bytes = &mut *(slice as *mut [MaybeUninit<u8>] as *mut [u8]);
            match Pin::new(&mut self.0).poll_read(cx, bytes) {
                Poll::Ready(Ok(read)) => {
                    buf.advance(read);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Serves one connection until the client closes it, it idles out, or `shutdown` fires (then
/// the in-flight request is finished and the connection closed).
pub async fn serve(
    shard: Rc<Shard>,
    stream: glommio::net::TcpStream,
    shutdown: flume::Receiver<()>,
) {
    let cfg = &shard.shared.config;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(cfg.idle_timeout_ms.max(1))));
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let local = stream.local_addr().unwrap_or(shard.shared.listen);
    let svc_shard = shard.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shard = svc_shard.clone();
        async move {
            Ok::<Response<Full<Bytes>>, Infallible>(
                crate::api::handle(&shard, req, peer, local).await,
            )
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // A client may shut its write side after sending a request and still wait for the
        // answer; without this hyper drops the request when it sees the EOF.
        .half_close(true)
        .max_buf_size(cfg.max_header_bytes)
        .serve_connection(Io(stream), service);
    let mut conn = pin!(conn);
    let mut stop = pin!(shutdown.recv_async());
    let finished = std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await;
    if !finished {
        conn.as_mut().graceful_shutdown();
        let grace = Duration::from_millis(shard.shared.config.shutdown_grace_ms);
        let _ = glommio::timer::timeout(grace, async {
            let _ = conn.as_mut().await;
            Ok(())
        })
        .await;
    }
}
