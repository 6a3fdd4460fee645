//! Our own accept loop in place of `axum::serve`, for what that one does not bound: a request head
//! must arrive within the header timeout (hyper's `header_read_timeout`, which also closes idle
//! keep-alive connections), open connections are capped (at the cap the oldest connection that is
//! not inside a request is closed to make room; when every one is busy the newcomer gets an
//! immediate `503` with `Retry-After`), an answer the client stops reading is dropped after the
//! body timeout without progress ([`WriteStall`]), and shutdown drains in-flight requests only up
//! to a deadline. A second SIGTERM/SIGINT during the drain stops at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::config::ConnLimits;
use crate::{Error, Result};

/// Refusals being written at once; past this a refused connection is just closed.
const MAX_REFUSALS: usize = 64;

/// How the accept loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request finished before the deadline.
    Drained,
    /// The deadline passed; this many connections were dropped mid-request.
    DeadlinePassed(usize),
}

/// One open connection: how many of its requests are being handled, and a way to close it.
struct Slot {
    busy: AtomicUsize,
    evicted: AtomicBool,
    close: Notify,
}

/// Open connections in accept order (oldest first), and their count against the cap.
#[derive(Default)]
struct Table {
    open: usize,
    conns: BTreeMap<u64, Arc<Slot>>,
}

struct Conns {
    table: Mutex<Table>,
    max: usize,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this lock leaves the counts usable; keep going.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection: a free one, or the one of the oldest connection that is not in a
    /// request (it is told to close). None: every connection is busy.
    fn admit(&self, id: u64) -> Option<Arc<Slot>> {
        let mut t = self.lock();
        if t.open >= self.max {
            let victim = t.conns.iter().find(|(_, s)| s.busy.load(Ordering::SeqCst) == 0).map(|(k, _)| *k)?;
            if let Some(s) = t.conns.remove(&victim) {
                // Its slot passes to the newcomer, so its end does not count down.
                s.evicted.store(true, Ordering::SeqCst);
                s.close.notify_one();
                tracing::debug!("connection limit reached: closing an idle connection for a new one");
            }
        } else {
            t.open += 1;
        }
        let slot = Arc::new(Slot { busy: AtomicUsize::new(0), evicted: AtomicBool::new(false), close: Notify::new() });
        t.conns.insert(id, slot.clone());
        Some(slot)
    }

    fn release(&self, id: u64, slot: &Slot) {
        let mut t = self.lock();
        t.conns.remove(&id);
        if !slot.evicted.load(Ordering::SeqCst) {
            t.open -= 1;
        }
    }
}

/// Counts a request as in progress on its connection while alive.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::SeqCst);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// SIGINT and SIGTERM as a stream of names (tokio keeps delivering after the first).
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let err = |e: std::io::Error| Error::Server(format!("cannot listen for signals: {e}"));
            Ok(Signals {
                int: signal(SignalKind::interrupt()).map_err(err)?,
                term: signal(SignalKind::terminate()).map_err(err)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            "Ctrl-C"
        }
    }
}

/// Serve `app` on `listener` until a signal; `on_shutdown` runs when the first arrives. Returns
/// how the drain ended, or an error naming the second signal when one cut it short.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ConnLimits,
    mut signals: Signals,
    on_shutdown: impl FnOnce(),
) -> Result<Stopped> {
    let conns = Arc::new(Conns { table: Mutex::new(Table::default()), max: limits.max_connections });
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let http = Arc::new(http);

    let first = loop {
        tokio::select! {
            sig = signals.recv() => break sig,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                next_id += 1;
                let id = next_id;
                match conns.admit(id) {
                    Some(slot) => {
                        let (app, conns, http, stop) = (app.clone(), conns.clone(), http.clone(), stop_rx.clone());
                        let stream = WriteStall::new(stream, limits.body_timeout);
                        tasks.spawn(async move {
                            connection(stream, app, &http, slot.clone(), stop).await;
                            conns.release(id, &slot);
                        });
                    }
                    None => match refusals.clone().try_acquire_owned() {
                        Ok(permit) => {
                            tracing::debug!("connection limit reached and every connection busy: 503");
                            tokio::spawn(async move {
                                refuse(stream).await;
                                drop(permit);
                            });
                        }
                        Err(_) => drop(stream),
                    },
                }
            }
        }
    };
    // New connections are refused from here on.
    drop(listener);
    on_shutdown();
    tracing::info!("{first}: finishing in-flight requests (at most {:?})", limits.shutdown_timeout);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::sleep(limits.shutdown_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { return Ok(Stopped::Drained) },
            _ = &mut deadline => {
                let n = tasks.len();
                tracing::warn!("shutdown deadline passed: dropping {n} connection(s) still in a request");
                tasks.abort_all();
                return Ok(Stopped::DeadlinePassed(n));
            }
            sig = signals.recv() => {
                return Err(Error::Server(format!(
                    "{sig} during shutdown: stopped at once, {} connection(s) dropped", tasks.len()
                )));
            }
        }
    }
}

/// Serve one connection until it ends, is evicted, or (at shutdown) is between requests.
async fn connection(
    stream: WriteStall<TcpStream>,
    app: Router,
    http: &hyper::server::conn::http1::Builder,
    slot: Arc<Slot>,
    mut stop: watch::Receiver<bool>,
) {
    let svc_slot = slot.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| -> Answer {
        let busy = Busy::new(svc_slot.clone());
        let app = app.clone();
        Box::pin(async move {
            let resp = app.oneshot(req.map(Body::new)).await;
            // Busy until hyper has written and dropped the answer's body.
            Ok::<_, Infallible>(resp.unwrap_or_else(|e| match e {}).map(|b| {
                Body::new(b.map_frame(move |f| {
                    let _busy = &busy;
                    f
                }))
            }))
        })
    });
    let mut conn = http.serve_connection(TokioIo::new(stream), svc);
    let mut stopping = *stop.borrow();
    if stopping {
        Pin::new(&mut conn).graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                match r {
                    // Done after an answer: close the way `refuse` does, so that a request body
                    // still arriving (after an early 413, say) does not turn the close into a
                    // reset that destroys the answer before the client read it.
                    Ok(()) => linger(conn.into_parts().io.into_inner().into_inner()).await,
                    Err(e) => tracing::debug!("connection ended: {e}"),
                }
                return;
            }
            _ = slot.close.notified() => return,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_err() || slot.busy.load(Ordering::SeqCst) == 0 {
                    // Not inside a request (maybe half a head): nothing to finish.
                    return;
                }
                // Finish the request in progress, then close.
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    }
}

/// A stream whose writes fail with `TimedOut` once one has made no progress for `limit`: a client
/// that stops reading its answer (with the socket buffers full) would otherwise hold its
/// connection, and the answer's memory, for as long as it likes.
pub struct WriteStall<T> {
    inner: T,
    limit: Duration,
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteStall<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        WriteStall { inner, limit, stalled_since: None }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn watch<R>(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        if r.is_ready() {
            self.stalled_since = None;
            return r;
        }
        let limit = self.limit;
        let timer = self.stalled_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled_since = None;
            let msg = format!("the client read nothing of the answer for {limit:?}");
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

/// What the per-connection service returns: boxed, so the connection is `Unpin` and can be taken
/// apart when it ends (`into_parts`).
type Answer = Pin<Box<dyn Future<Output = std::result::Result<axum::response::Response, Infallible>> + Send>>;

/// The body of the 503 sent when every connection is busy.
fn refusal() -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "message": "server has too many open connections; retry later",
        "type": "overloaded_error",
        "code": "too_many_connections",
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answer 503 without reading the request, then close gently: half-close, and read what the client
/// sent for a moment, so the close does not reset the connection before the client read the answer.
async fn refuse(mut stream: TcpStream) {
    let t = Duration::from_secs(1);
    if !matches!(tokio::time::timeout(t, stream.write_all(&refusal())).await, Ok(Ok(()))) {
        return;
    }
    linger(stream).await;
}

/// Half-close, then read and discard what the client still sends (for at most 2 s, 4 MiB): a
/// close with unread data is a reset, which can reach the client before it read our answer.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut buf).await {
            total += n;
            if n == 0 || total > 4 << 20 {
                break;
            }
        }
    })
    .await;
}

/// Raise the soft open-file limit to the hard one (each connection is a descriptor) and return
/// how many connections fit under it: `max_connections`, or fewer (with a warning) when the limit
/// is too low, so that the cap, not a failing `accept`, decides who waits.
pub fn raise_fd_limit(max_connections: usize) -> usize {
    #[cfg(unix)]
    {
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return max_connections;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        // Model files, the listener, refusals in flight, logs: a margin for what is not a connection.
        const MARGIN: usize = MAX_REFUSALS + 128;
        let fit = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX).saturating_sub(MARGIN).max(1);
        if fit < max_connections {
            tracing::warn!(
                "open-file limit {} leaves room for {fit} connections, not max_connections {max_connections}: \
                 using {fit} (raise the limit with ulimit -n)",
                lim.rlim_cur
            );
            return fit;
        }
        max_connections
    }
    #[cfg(not(unix))]
    max_connections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_nobody_reads_times_out() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = WriteStall::new(a, Duration::from_millis(50));
        // More than the pipe holds, and nobody reads.
        let err = w.write_all(&[7u8; 1024]).await.expect_err("stalled write");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        // A reader that keeps up: the same write goes through.
        let mut w = WriteStall::new(w.inner, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut total = 0;
            loop {
                match b.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        // The pipe may still hold bytes of the failed write; the reader drains them too, to the end.
        w.write_all(&[7u8; 1024]).await.expect("write with a reader");
        drop(w);
        assert!(reader.await.unwrap_or(0) >= 1024);
    }
}
