//! A local HTTP server in NGC's shape for the published-weights tests: files served from a
//! directory with `Range: bytes=N-` support (206 + Content-Range), every request recorded, and
//! faults on demand (the first response of a file cut in the middle; every body of a file
//! corrupted). The trainer's real download code runs against it; only the server is ours.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The path.
    pub path: String,
    /// The Range header, if any.
    pub range: Option<String>,
}

#[derive(Default)]
struct Shared {
    root: PathBuf,
    seen: Mutex<Vec<Seen>>,
    /// Cut the next response of a file whose path ends like this after half its bytes.
    truncate_once: Mutex<Option<String>>,
    /// Flip a byte in every response of files whose path ends like this.
    corrupt: Mutex<Option<String>>,
}

/// The server; its thread serves until the test process ends.
pub struct NgcServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl NgcServer {
    /// Serves `root` at `http://addr/`.
    pub fn start(root: PathBuf) -> Self {
        let shared = Arc::new(Shared {
            root,
            ..Shared::default()
        });
        let app = Router::new().fallback(serve).with_state(shared.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Self { addr, shared }
    }

    /// `http://addr/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests of paths ending in `suffix`.
    pub fn count(&self, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .count()
    }

    /// Cuts the next response of a file ending in `suffix` after half its bytes.
    pub fn truncate_once(&self, suffix: &str) {
        *self.shared.truncate_once.lock().unwrap() = Some(suffix.to_owned());
    }

    /// Corrupts every response of files ending in `suffix`.
    pub fn corrupt(&self, suffix: &str) {
        *self.shared.corrupt.lock().unwrap() = Some(suffix.to_owned());
    }
}

async fn serve(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/').to_owned();
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    shared.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let Ok(mut bytes) = std::fs::read(shared.root.join(&path)) else {
        return status(StatusCode::NOT_FOUND);
    };
    if let Some(s) = shared.corrupt.lock().unwrap().as_deref()
        && path.ends_with(s)
        && !bytes.is_empty()
    {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    }
    let total = bytes.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (code, body_start) = match start {
        Some(s) if s >= total => return status(StatusCode::RANGE_NOT_SATISFIABLE),
        Some(s) => (StatusCode::PARTIAL_CONTENT, s),
        None => (StatusCode::OK, 0),
    };
    let body = Bytes::from(bytes).slice(body_start..);
    let cut = {
        let mut t = shared.truncate_once.lock().unwrap();
        let hit = t.as_deref().is_some_and(|s| path.ends_with(s));
        if hit {
            *t = None;
        }
        hit
    };
    let length = body.len();
    let mut builder = Response::builder()
        .status(code)
        .header("content-length", length.to_string())
        .header("accept-ranges", "bytes");
    if code == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            "content-range",
            format!("bytes {body_start}-{}/{total}", total - 1),
        );
    }
    let body = if cut {
        // Half the bytes, then a broken stream: the client sees the connection end early.
        let half = body.slice(..length / 2);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::other("cut by the test server")),
        ];
        Body::from_stream(futures::stream::iter(chunks))
    } else {
        Body::from(body)
    };
    builder.body(body).unwrap()
}

fn status(code: StatusCode) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap()
}
