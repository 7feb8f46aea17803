//! The fake API server's watches: every change after a `resourceVersion`, one JSON event per
//! line, ended by a disconnect or the timeout; `410 Gone` for a version compacted away.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::{Bytes, Frame};
use serde_json::json;
use tokio::sync::watch;

use super::fake_api::{Body, Shared};
use super::fake_api_objects::{in_collection, selected_name, status_object};

/// A watch: every change after `resourceVersion` in `collection` (matching the field
/// selector), one JSON object per line, until the client leaves, the timeout passes, or
/// [`FakeApi::close_watches`].
pub(super) fn watch_stream(
    shared: &Arc<Shared>,
    collection: String,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let name = selected_name(query);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let gone = from < shared.state.lock().unwrap().compacted_below;
    let deadline = tokio::time::Instant::now() + timeout;
    struct Cursor {
        shared: Arc<Shared>,
        collection: String,
        name: Option<String>,
        last: u64,
        gone: bool,
        changed: watch::Receiver<u64>,
        disconnect: watch::Receiver<u64>,
        deadline: tokio::time::Instant,
    }
    let cursor = Cursor {
        shared: Arc::clone(shared),
        collection,
        name,
        last: from,
        gone,
        changed: shared.changed.subscribe(),
        disconnect: shared.disconnect.subscribe(),
        deadline,
    };
    let lines = futures_util::stream::unfold(cursor, |mut c| async move {
        if c.gone {
            let status = status_object(
                410,
                "Expired",
                format!("too old resource version: {}", c.last),
            );
            let line = json!({"type": "ERROR", "object": status});
            c.gone = false;
            c.last = u64::MAX;
            return Some((line, c));
        }
        if c.last == u64::MAX {
            return None;
        }
        loop {
            // A disconnect ends the stream before anything newer is sent.
            if c.disconnect.has_changed().unwrap_or(true) {
                return None;
            }
            c.changed.borrow_and_update();
            let next = {
                let state = c.shared.state.lock().unwrap();
                state
                    .log
                    .iter()
                    .find(|ch| {
                        ch.version > c.last
                            && in_collection(&ch.path, &c.collection, c.name.as_deref())
                    })
                    .cloned()
            };
            if let Some(change) = next {
                c.last = change.version;
                let line = json!({"type": change.kind, "object": change.object});
                return Some((line, c));
            }
            tokio::select! {
                r = c.changed.changed() => if r.is_err() { return None },
                _ = c.disconnect.changed() => return None,
                () = tokio::time::sleep_until(c.deadline) => return None,
            }
        }
    });
    let frames =
        lines.map(|line| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{line}\n")))));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
