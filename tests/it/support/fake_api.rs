//! A small in-process Kubernetes API server: plain HTTP on 127.0.0.1, real JSON, and the parts
//! of the real server's behaviour our clients depend on:
//! - GET / POST / PUT / PATCH (merge) / DELETE on any object path, lists of a collection with a
//!   `metadata.name` field selector, and `?watch=true` streams of ADDED / MODIFIED / DELETED;
//! - `resourceVersion` checked on every replace and on a patch that names one (409 on a stale
//!   one). A write without one is an unconditional overwrite, as on the real server, and is
//!   counted so tests can forbid it;
//! - `Status` objects for errors, injectable faults (403, 500, …), requests held unanswered
//!   (a writer killed mid-request), closing every watch, and compaction: a watch resuming from
//!   before it gets an ERROR event with code 410 (Gone);
//! - optionally, RBAC: a Role's rules decide every request, as the real authorizer would
//!   (verbs, API groups, resources, resourceNames, list/watch by a `metadata.name` selector).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::rbac::access;
pub use super::rbac::{Access, Rule, example_role};

type Body = BoxBody<Bytes, Infallible>;

/// One change, as a watch reports it.
#[derive(Clone)]
struct Change {
    version: u64,
    path: String,
    kind: &'static str,
    object: Value,
}

/// A request matching this is held unanswered until [`FakeApi::release_stalled`], then
/// refused with 503 without being applied: a client that dies mid-request.
struct Stall {
    method: Method,
    path: String,
    body: Box<dyn Fn(&Value) -> bool + Send>,
}

/// A Role in force: its namespace and rules, which rules were used, what was refused.
struct Rbac {
    namespace: String,
    rules: Vec<Rule>,
    used: Vec<bool>,
    denied: Vec<Access>,
}

/// A fault to answer instead of serving a request.
struct Fault {
    method: Method,
    path_prefix: String,
    code: StatusCode,
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    /// Object path (`/api/v1/namespaces/ns/secrets/name`) → object.
    objects: BTreeMap<String, Value>,
    next_version: u64,
    /// Successful writes per object path.
    writes: BTreeMap<String, usize>,
    /// Replaces refused with 409 per object path.
    conflicts: BTreeMap<String, usize>,
    /// Replaces and patches that named no resourceVersion (unconditional overwrites), per path.
    unconditional: BTreeMap<String, usize>,
    /// Every change of every object, never compacted: (path, object after the change).
    history: Vec<(String, Value)>,
    stalls: Vec<Stall>,
    /// Requests being held by a stall now.
    stalled: usize,
    rbac: Option<Rbac>,
    /// Every change, oldest first.
    log: Vec<Change>,
    /// Watches resuming from a version below this get 410 Gone.
    compacted_below: u64,
    faults: Vec<Fault>,
    /// `METHOD path?query` of every request, in order.
    requests: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change, so open watches look at the log again.
    changed: watch::Sender<u64>,
    /// Bumped to end every open watch stream.
    disconnect: watch::Sender<u64>,
    /// Bumped to let stalled requests go (refused).
    release: watch::Sender<u64>,
}

/// The fake API server; dropped, it stops serving.
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            disconnect: watch::channel(0).0,
            release: watch::channel(0).0,
        });
        let served = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let shared = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(req, &shared).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        FakeApi {
            addr,
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).expect("kube client")
    }

    /// A kubeconfig file for processes (the sidecar binary) to reach this server with.
    pub fn write_kubeconfig(&self, dir: &std::path::Path, namespace: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             users:\n- name: fake\n  user: {{}}\n",
            self.addr
        );
        std::fs::write(&path, config).unwrap();
        path
    }

    /// Stores `object` at `path` as someone else would (create or overwrite); watches see it.
    pub fn seed(&self, path: &str, object: Value) {
        let mut state = self.state();
        let kind = if state.objects.contains_key(path) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store(&mut state, path.to_string(), object, kind);
        drop(state);
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// Deletes the object at `path`; watches see it.
    pub fn delete(&self, path: &str) {
        let mut state = self.state();
        remove(&mut state, path);
        drop(state);
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// The object at `path`, if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state().objects.get(path).cloned()
    }

    /// Every object in the collection `path`.
    pub fn list(&self, path: &str) -> Vec<Value> {
        let state = self.state();
        items(&state, path, None)
    }

    /// Successful creates and replaces of `path` so far.
    pub fn writes(&self, path: &str) -> usize {
        self.state().writes.get(path).copied().unwrap_or(0)
    }

    /// Replaces of `path` refused because they named a stale resourceVersion.
    pub fn conflicts(&self, path: &str) -> usize {
        self.state().conflicts.get(path).copied().unwrap_or(0)
    }

    /// Replaces and patches that named no resourceVersion (which the real server would
    /// apply blindly), of any object.
    pub fn unconditional_writes(&self) -> usize {
        self.state().unconditional.values().sum()
    }

    /// Unconditional writes of `path`.
    pub fn unconditional_writes_to(&self, path: &str) -> usize {
        self.state().unconditional.get(path).copied().unwrap_or(0)
    }

    /// Every version `path` had, oldest first (deletions show as the deleted object).
    pub fn history(&self, path: &str) -> Vec<Value> {
        self.state()
            .history
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Holds `method` requests to `path` whose JSON body satisfies `body`: they get no answer
    /// until [`FakeApi::release_stalled`], and are then refused without being applied.
    pub fn stall(
        &self,
        method: Method,
        path: &str,
        body: impl Fn(&Value) -> bool + Send + 'static,
    ) {
        self.state().stalls.push(Stall {
            method,
            path: path.into(),
            body: Box::new(body),
        });
    }

    /// How many requests are being held now.
    pub fn stalled(&self) -> usize {
        self.state().stalled
    }

    /// Stops stalling, and refuses (503, not applied) the requests held so far.
    pub fn release_stalled(&self) {
        self.state().stalls.clear();
        self.shared.release.send_modify(|v| *v += 1);
    }

    /// From now on, authorizes every request against `rules` of a Role in `namespace`, as the
    /// RBAC authorizer would; refusals are 403 and recorded.
    pub fn enforce_role(&self, namespace: &str, rules: Vec<Rule>) {
        let used = vec![false; rules.len()];
        self.state().rbac = Some(Rbac {
            namespace: namespace.into(),
            rules,
            used,
            denied: Vec::new(),
        });
    }

    /// The requests RBAC refused so far.
    pub fn denied(&self) -> Vec<Access> {
        self.state()
            .rbac
            .as_ref()
            .map(|r| r.denied.clone())
            .unwrap_or_default()
    }

    /// The rules (by index) no request has needed so far.
    pub fn unused_rules(&self) -> Vec<usize> {
        self.state().rbac.as_ref().map_or_else(Vec::new, |r| {
            r.used
                .iter()
                .enumerate()
                .filter(|(_, used)| !**used)
                .map(|(i, _)| i)
                .collect()
        })
    }

    /// How many requests so far had a `METHOD path?query` line containing `needle`.
    pub fn requests_matching(&self, needle: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.contains(needle))
            .count()
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// Answers `method` requests under `path_prefix` with `code` (`times` times, or always).
    pub fn fail(&self, method: Method, path_prefix: &str, code: u16, times: Option<usize>) {
        self.state().faults.push(Fault {
            method,
            path_prefix: path_prefix.into(),
            code: StatusCode::from_u16(code).unwrap(),
            remaining: times,
        });
    }

    /// Stops failing requests.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Ends every open watch stream, as a load balancer or an API server restart would.
    pub fn close_watches(&self) {
        self.shared.disconnect.send_modify(|v| *v += 1);
    }

    /// Forgets the change history (etcd compaction) and ends every watch: a client resuming
    /// from an old resourceVersion gets 410 Gone and must list again.
    pub fn compact(&self) {
        let mut state = self.state();
        state.compacted_below = state.next_version + 1;
        state.log.clear();
        drop(state);
        self.close_watches();
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    reply(code, &status_object(code.as_u16(), reason, message))
}

fn status_object(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}

fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `a=b&c=d`, percent-decoded.
fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True for `/api/v1/namespaces/ns/secrets` and `/apis/g/v/things`, false for object paths.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix = if segments.first() == Some(&"api") {
        2
    } else {
        3
    };
    let rest = segments.get(prefix..).unwrap_or(&[]);
    if rest.first() == Some(&"namespaces") {
        rest.len() == 3
    } else {
        rest.len() == 1
    }
}

/// The name a `fieldSelector=metadata.name=NAME` asks for.
pub(super) fn selected_name(query: &BTreeMap<String, String>) -> Option<String> {
    let selector = query.get("fieldSelector")?;
    let name = selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))?;
    Some(name.to_string())
}

fn in_collection(path: &str, collection: &str, name: Option<&str>) -> bool {
    let Some(item) = path
        .strip_prefix(collection)
        .and_then(|p| p.strip_prefix('/'))
    else {
        return false;
    };
    !item.contains('/') && name.is_none_or(|n| n == item)
}

fn items(state: &State, collection: &str, name: Option<&str>) -> Vec<Value> {
    state
        .objects
        .iter()
        .filter(|(path, _)| in_collection(path, collection, name))
        .map(|(_, object)| object.clone())
        .collect()
}

async fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query(&req);
    {
        let mut state = shared.state.lock().unwrap();
        let line = format!("{method} {}", req.uri());
        state.requests.push(line);
        if let Some(refusal) = authorize(&mut state, &method, &path, &query) {
            return refusal;
        }
        if let Some(fault) = state
            .faults
            .iter_mut()
            .find(|f| f.method == method && path.starts_with(&f.path_prefix))
        {
            let code = fault.code;
            if let Some(n) = &mut fault.remaining {
                *n -= 1;
            }
            state.faults.retain(|f| f.remaining != Some(0));
            let reason = code.canonical_reason().unwrap_or("Error").replace(' ', "");
            return status(code, &reason, format!("injected {code} for {path}"));
        }
    }
    if method == Method::GET && matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
    {
        return watch_stream(shared, path, &query);
    }
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    let object: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
        }
    };
    let stalled = {
        let mut state = shared.state.lock().unwrap();
        let held = state
            .stalls
            .iter()
            .any(|s| s.method == method && s.path == path && (s.body)(&object));
        if held {
            state.stalled += 1;
        }
        held
    };
    if stalled {
        let mut release = shared.release.subscribe();
        let _ = release.changed().await;
        shared.state.lock().unwrap().stalled -= 1;
        let message = format!("{method} {path} was held and dropped");
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        );
    }
    let response = {
        let mut state = shared.state.lock().unwrap();
        serve(&mut state, &method, path, &query, object)
    };
    if method != Method::GET {
        shared.changed.send_modify(|v| *v += 1);
    }
    response
}

fn not_found(path: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{path} not found"),
    )
}

fn serve(
    state: &mut State,
    method: &Method,
    path: String,
    query: &BTreeMap<String, String>,
    object: Value,
) -> Response<Body> {
    match *method {
        Method::GET if is_collection(&path) => {
            let name = selected_name(query);
            let list = json!({
                "kind": "List", "apiVersion": "v1",
                "metadata": {"resourceVersion": state.next_version.to_string()},
                "items": items(state, &path, name.as_deref()),
            });
            reply(StatusCode::OK, &list)
        }
        Method::GET => match state.objects.get(&path) {
            Some(found) => reply(StatusCode::OK, found),
            None => not_found(&path),
        },
        Method::POST => {
            let Some(name) = object["metadata"]["name"].as_str() else {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "no name".into(),
                );
            };
            let item = format!("{path}/{name}");
            if state.objects.contains_key(&item) {
                let message = format!("{item} already exists");
                return status(StatusCode::CONFLICT, "AlreadyExists", message);
            }
            let stored = store(state, item, object, "ADDED");
            reply(StatusCode::CREATED, &stored)
        }
        Method::PUT => {
            let Some(current) = state.objects.get(&path).cloned() else {
                return not_found(&path);
            };
            if let Some(conflict) = precondition(state, &path, &object, &current) {
                return conflict;
            }
            let stored = store(state, path, object, "MODIFIED");
            reply(StatusCode::OK, &stored)
        }
        Method::PATCH => {
            let Some(mut current) = state.objects.get(&path).cloned() else {
                return not_found(&path);
            };
            // As on the real server, a resourceVersion in the patch is a precondition.
            let before = current.clone();
            if let Some(conflict) = precondition(state, &path, &object, &before) {
                return conflict;
            }
            json_patch::merge(&mut current, &object);
            let stored = store(state, path, current, "MODIFIED");
            reply(StatusCode::OK, &stored)
        }
        Method::DELETE => match remove(state, &path) {
            Some(_) => reply(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            None => not_found(&path),
        },
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            method.to_string(),
        ),
    }
}

/// Checks the resourceVersion a write names against the stored one: a stale one gets the 409
/// returned here (counted), none is an unconditional write (counted).
fn precondition(
    state: &mut State,
    path: &str,
    written: &Value,
    current: &Value,
) -> Option<Response<Body>> {
    match written["metadata"]["resourceVersion"].as_str() {
        None => {
            *state.unconditional.entry(path.to_string()).or_default() += 1;
            None
        }
        Some(sent) if Some(sent) != current["metadata"]["resourceVersion"].as_str() => {
            *state.conflicts.entry(path.to_string()).or_default() += 1;
            let message = format!(
                "Operation cannot be fulfilled on {path}: the object has been modified; \
                 please apply your changes to the latest version and try again (sent {sent})"
            );
            Some(status(StatusCode::CONFLICT, "Conflict", message))
        }
        Some(_) => None,
    }
}

/// With a Role in force, the 403 a request not allowed by it gets (and the rule use recorded).
fn authorize(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
) -> Option<Response<Body>> {
    let rbac = state.rbac.as_mut()?;
    let request = access(method, path, query)?;
    if request.namespace.as_deref() == Some(rbac.namespace.as_str())
        && let Some(i) = rbac.rules.iter().position(|r| r.allows(&request))
    {
        rbac.used[i] = true;
        return None;
    }
    let message = format!(
        "{} {:?} is forbidden: User \"system:serviceaccount:{}:test\" cannot {} resource {:?} \
         in API group {:?} in the namespace {:?}",
        request.resource,
        request.name.clone().unwrap_or_default(),
        rbac.namespace,
        request.verb,
        request.resource,
        request.group,
        request.namespace.clone().unwrap_or_default()
    );
    rbac.denied.push(request);
    Some(status(StatusCode::FORBIDDEN, "Forbidden", message))
}

fn store(state: &mut State, path: String, mut object: Value, kind: &'static str) -> Value {
    state.next_version += 1;
    let version = state.next_version;
    object["metadata"]["resourceVersion"] = json!(version.to_string());
    *state.writes.entry(path.clone()).or_default() += 1;
    state.objects.insert(path.clone(), object.clone());
    state.history.push((path.clone(), object.clone()));
    state.log.push(Change {
        version,
        path,
        kind,
        object: object.clone(),
    });
    object
}

fn remove(state: &mut State, path: &str) -> Option<Value> {
    let mut object = state.objects.remove(path)?;
    state.next_version += 1;
    let version = state.next_version;
    object["metadata"]["resourceVersion"] = json!(version.to_string());
    state.history.push((path.to_string(), object.clone()));
    state.log.push(Change {
        version,
        path: path.to_string(),
        kind: "DELETED",
        object: object.clone(),
    });
    Some(object)
}

/// A watch: every change after `resourceVersion` in `collection` (matching the field
/// selector), one JSON object per line, until the client leaves, the timeout passes, or
/// [`FakeApi::close_watches`].
fn watch_stream(
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
