//! Connections: the accept loop under a connection limit, with a header timeout that also
//! bounds how long a kept-alive connection may sit idle, and a shutdown that keeps answering
//! (503 for new work, `/health` "stopping") while running streams finish.
//!
//! Why not `axum::serve`: it has no timer (so no header timeout), no connection limit, and
//! stops accepting the moment shutdown begins. A slow or idle client could then hold a
//! connection, and a descriptor, forever (slowloris), and enough of them starve real clients.
//!
//! * **Header timeout** (`--header-timeout`): hyper closes a connection whose request head
//!   has not fully arrived this long after the connection opened or its last response ended.
//! * **Body timeout** (`--body-timeout`): the handlers read a body under it (408 beyond), so
//!   a client that announces 100 bytes and sends 10 is answered and closed.
//! * **Connection limit** (`--max-connections`, bounded by the descriptor limit): at the limit
//!   a new connection closes the longest-idle connection that has no request in progress
//!   (idle, or still sending its head); when every connection is busy, the new one gets a 503
//!   and is closed. So idle and slow clients can never keep a real one out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tower_service::Service;

/// Limits on connections (also `flashlm-serve`'s flag defaults, in `ServeConfig::DEFAULT`).
#[derive(Debug, Clone)]
pub struct NetLimits {
    /// A request head must arrive within this, counted from the connection's start or the end
    /// of its previous response (so it is also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// A request body must arrive within this once its head has (408 beyond).
    pub body_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Descriptors kept free for the model file, logs and the listener itself.
const RESERVED_FDS: u64 = 32;

/// `wanted`, lowered to what the process's descriptor limit allows (`None`: not lowered).
pub fn connections_allowed(wanted: usize) -> (usize, Option<u64>) {
    match fd_limit() {
        Some(n) if n.saturating_sub(RESERVED_FDS) < wanted as u64 => {
            ((n.saturating_sub(RESERVED_FDS) as usize).max(1), Some(n))
        }
        _ => (wanted, None),
    }
}

#[cfg(unix)]
fn fd_limit() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives here.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

#[cfg(not(unix))]
fn fd_limit() -> Option<u64> {
    None
}

/// One open connection, as the limit sees it.
struct Slot {
    /// Requests in progress (head read, response not yet fully written).
    busy: usize,
    /// When it last became idle (or opened).
    idle_since: Instant,
    /// Closes it at once (dropping the connection).
    close: oneshot::Sender<()>,
}

/// The open connections.
#[derive(Default)]
struct Tracker {
    slots: Mutex<HashMap<u64, Slot>>,
    next: AtomicU64,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for one more connection: true if below `max`, or after closing the longest-idle
    /// connection with no request in progress.
    fn make_room(&self, max: usize) -> bool {
        let mut slots = self.lock();
        if slots.len() < max {
            return true;
        }
        let victim =
            slots.iter().filter(|(_, s)| s.busy == 0).min_by_key(|(_, s)| s.idle_since).map(|(&id, _)| id);
        let Some(id) = victim else { return false };
        if let Some(s) = slots.remove(&id) {
            let _ = s.close.send(());
        }
        true
    }

    fn open(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, Slot { busy: 0, idle_since: Instant::now(), close: tx });
        (id, rx)
    }

    fn closed(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Marks its connection busy while it lives: from a request's head until the response's body
/// is written (or dropped).
struct Busy {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Busy {
    fn new(tracker: Arc<Tracker>, id: u64) -> Self {
        if let Some(s) = tracker.lock().get_mut(&id) {
            s.busy += 1;
        }
        Self { tracker, id }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(s) = self.tracker.lock().get_mut(&self.id) {
            s.busy -= 1;
            if s.busy == 0 {
                s.idle_since = Instant::now();
            }
        }
    }
}

/// A response body that holds its connection's [`Busy`] mark until it ends.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // `Body` is Unpin (a boxed body), so is `Guarded`.
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The fixed answer to a connection over the limit when no connection can be closed for it.
fn busy_response() -> Vec<u8> {
    let body = r#"{"error":{"message":"the server is at its limit of open connections (--max-connections); retry later","type":"server_error","param":null,"code":"too_many_connections"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How the accept loop ends.
pub(crate) struct Drain {
    /// Resolves when shutdown begins.
    pub(crate) shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Called once when it does (the engine refuses new work from then on).
    pub(crate) begin: Box<dyn FnOnce() + Send>,
    /// True once nothing is running or queued.
    pub(crate) idle: Box<dyn Fn() -> bool + Send>,
    /// The longest the loop goes on after shutdown began.
    pub(crate) bound: Duration,
}

/// Serve `app` on `listener` until shutdown has begun and the engine is idle (or `bound` has
/// passed); meanwhile requests are still answered (new work with 503, `/health` with
/// "stopping"). Then every connection is closed once its response is written (at most 2 s).
pub(crate) async fn serve(listener: TcpListener, app: Router, limits: NetLimits, mut drain: Drain) {
    let tracker = Arc::new(Tracker::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut begin = Some(drain.begin);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = &mut drain.shutdown, if deadline.is_none() => {
                if let Some(b) = begin.take() { b(); }
                deadline = Some(tokio::time::Instant::now() + drain.bound);
            }
            _ = tick.tick(), if deadline.is_some() => {
                if (drain.idle)() || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
            }
            r = listener.accept() => match r {
                Ok((sock, _)) => accept(sock, &app, &limits, &tracker, stop_rx.clone()),
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept: make
                // room if a connection is idle, and wait a moment rather than spin.
                Err(_) => {
                    tracker.make_room(tracker.len());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    let _ = stop_tx.send(true);
    let end = tokio::time::Instant::now() + Duration::from_secs(2);
    while tracker.len() > 0 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn accept(
    sock: TcpStream,
    app: &Router,
    limits: &NetLimits,
    tracker: &Arc<Tracker>,
    stop: watch::Receiver<bool>,
) {
    let _ = sock.set_nodelay(true);
    if !tracker.make_room(limits.max_connections) {
        tokio::spawn(async move {
            let mut sock = sock;
            let _ = tokio::time::timeout(Duration::from_secs(1), sock.write_all(&busy_response())).await;
            let _ = sock.shutdown().await;
        });
        return;
    }
    let (id, evicted) = tracker.open();
    let (app, tracker, header_timeout) = (app.clone(), tracker.clone(), limits.header_timeout);
    tokio::spawn(async move {
        let t = tracker.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = Busy::new(t.clone(), id);
            let mut app = app.clone();
            async move {
                let resp = app.call(req.map(Body::new)).await.unwrap_or_else(|e: Infallible| match e {});
                Ok::<_, Infallible>(resp.map(|inner| Body::new(Guarded { inner, _busy: busy })))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(sock), svc);
        tokio::pin!(conn);
        let mut stop = stop;
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = evicted => {}
            // (An async block: the borrow wait_for returns must not live across the select.)
            () = async { let _ = stop.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
            }
        }
        tracker.closed(id);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_the_longest_idle_connection_goes_and_busy_ones_stay() {
        let t = Arc::new(Tracker::default());
        let (a, mut ra) = t.open();
        std::thread::sleep(Duration::from_millis(5));
        let (b, mut rb) = t.open();
        assert!(t.make_room(3), "below the limit");
        // Both idle: the older one (a) is closed.
        assert!(t.make_room(2));
        assert!(ra.try_recv().is_ok(), "a was not closed");
        assert!(rb.try_recv().is_err(), "b was closed");
        assert_eq!(t.len(), 1);
        // b busy: nothing can be closed.
        let busy = Busy::new(t.clone(), b);
        assert!(!t.make_room(1));
        drop(busy);
        assert!(t.make_room(1), "b is idle again");
        assert!(rb.try_recv().is_ok());
        t.closed(a);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_descriptor_limit_lowers_the_connection_limit() {
        let (n, lowered) = connections_allowed(usize::MAX / 2);
        match lowered {
            Some(lim) => assert_eq!(n as u64, lim.saturating_sub(RESERVED_FDS).max(1)),
            None => assert_eq!(n, usize::MAX / 2),
        }
        assert_eq!(connections_allowed(1).0, 1);
    }
}
