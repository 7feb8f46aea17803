//! A small in-process Kubernetes API server: plain HTTP on 127.0.0.1, real JSON, and the parts
//! of the real server's behaviour our clients depend on:
//! - GET / POST / PUT / PATCH (merge, or JSON Patch: `test` failures are 422 as on the real
//!   server) / DELETE on any object path, lists of a collection with a
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

use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::fake_api_objects::{items, query, remove, serve, status, store};
use super::fake_api_watch::watch_stream;
use super::rbac::Rbac;
pub use super::rbac::{Access, Rule, example_role};

pub(super) type Body = BoxBody<Bytes, Infallible>;

/// One change, as a watch reports it.
#[derive(Clone)]
pub(super) struct Change {
    pub(super) version: u64,
    pub(super) path: String,
    pub(super) kind: &'static str,
    pub(super) object: Value,
}

/// A request matching this is held unanswered until [`FakeApi::release_stalled`], then
/// refused with 503 without being applied: a client that dies mid-request.
pub(super) struct Stall {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) body: Box<dyn Fn(&Value) -> bool + Send>,
}

/// A fault to answer instead of serving a request.
pub(super) struct Fault {
    pub(super) method: Method,
    pub(super) path_prefix: String,
    pub(super) code: StatusCode,
    pub(super) remaining: Option<usize>,
}

#[derive(Default)]
pub(super) struct State {
    /// Object path (`/api/v1/namespaces/ns/secrets/name`) → object.
    pub(super) objects: BTreeMap<String, Value>,
    pub(super) next_version: u64,
    /// Successful writes per object path.
    pub(super) writes: BTreeMap<String, usize>,
    /// Replaces refused with 409 per object path.
    pub(super) conflicts: BTreeMap<String, usize>,
    /// Replaces and patches that named no resourceVersion (unconditional overwrites), per path.
    pub(super) unconditional: BTreeMap<String, usize>,
    /// Every change of every object, never compacted: (path, object after the change).
    pub(super) history: Vec<(String, Value)>,
    pub(super) stalls: Vec<Stall>,
    /// Requests being held by a stall now.
    pub(super) stalled: usize,
    pub(super) rbac: Option<Rbac>,
    /// Every change, oldest first.
    pub(super) log: Vec<Change>,
    /// Watches resuming from a version below this get 410 Gone.
    pub(super) compacted_below: u64,
    pub(super) faults: Vec<Fault>,
    /// `METHOD path?query` of every request, in order.
    pub(super) requests: Vec<String>,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Bumped on every change, so open watches look at the log again.
    pub(super) changed: watch::Sender<u64>,
    /// Bumped to end every open watch stream.
    pub(super) disconnect: watch::Sender<u64>,
    /// Bumped to let stalled requests go (refused).
    pub(super) release: watch::Sender<u64>,
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
            cluster_rules: Vec::new(),
            used,
            denied: Vec::new(),
        });
    }

    /// Adds the `rules` of a ClusterRole bound by a ClusterRoleBinding to the Role in force
    /// ([`FakeApi::enforce_role`]): they apply in every namespace and to cluster-scoped objects.
    /// Their indexes in [`FakeApi::unused_rules`] follow the Role's.
    pub fn enforce_cluster_role(&self, rules: Vec<Rule>) {
        let mut state = self.state();
        let rbac = state.rbac.as_mut().expect("enforce_role first");
        rbac.used.extend(rules.iter().map(|_| false));
        rbac.cluster_rules = rules;
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

async fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query(&req);
    {
        let mut state = shared.state.lock().unwrap();
        let line = format!("{method} {}", req.uri());
        state.requests.push(line);
        if let Some(rbac) = state.rbac.as_mut()
            && let Some(refusal) = super::rbac::authorize(rbac, &method, &path, &query)
        {
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
    let json_patch = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json-patch+json"));
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
        if method == Method::PATCH && json_patch {
            apply_json_patch(&mut state, path, &query, object)
        } else {
            serve(&mut state, &method, path, &query, object)
        }
    };
    if method != Method::GET {
        shared.changed.send_modify(|v| *v += 1);
    }
    response
}

/// A JSON Patch (RFC 6902) as the apiserver applies one (pkg/endpoints/handlers/patch.go):
/// to the stored object, a failed operation answered 422; the result is then updated as a
/// replace, so a resourceVersion the patch set is a precondition.
fn apply_json_patch(
    state: &mut State,
    path: String,
    query: &BTreeMap<String, String>,
    patch: Value,
) -> Response<Body> {
    let Some(mut current) = state.objects.get(&path).cloned() else {
        return serve(state, &Method::GET, path, query, Value::Null);
    };
    let patch: json_patch::Patch = match serde_json::from_value(patch) {
        Ok(patch) => patch,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    if let Err(e) = json_patch::patch(&mut current, &patch) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "", e.to_string());
    }
    serve(state, &Method::PUT, path, query, current)
}
