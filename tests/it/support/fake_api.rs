//! A small in-process Kubernetes API server: plain HTTP on 127.0.0.1, real JSON, GET / POST /
//! PUT on any object path, `resourceVersion` checked on every replace (409 on a stale one, as
//! the real server answers), and `Status` objects for errors. Enough for kube's client.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    /// Object path (`/api/v1/namespaces/ns/secrets/name`) → object.
    objects: BTreeMap<String, Value>,
    next_version: u64,
    /// Successful writes per object path.
    writes: BTreeMap<String, usize>,
}

/// The fake API server; dropped, it stops serving.
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        FakeApi {
            addr,
            state,
            _task: Arc::new(task),
        }
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).expect("kube client")
    }

    /// Stores `object` at `path` as if created by someone else.
    pub fn seed(&self, path: &str, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.next_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
        state.objects.insert(path.to_string(), object);
    }

    /// The object at `path`, if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Successful creates and replaces of `path` so far.
    pub fn writes(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .writes
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()
    });
    reply(code, &body)
}

fn reply(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(req: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
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
    let mut state = state.lock().unwrap();
    match method {
        Method::GET => match state.objects.get(&path) {
            Some(found) => reply(StatusCode::OK, found),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{path} not found"),
            ),
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
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{item} exists"),
                );
            }
            store(&mut state, item, object, StatusCode::CREATED)
        }
        Method::PUT => {
            let Some(current) = state.objects.get(&path) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{path} not found"),
                );
            };
            let sent = object["metadata"]["resourceVersion"].as_str();
            if sent != current["metadata"]["resourceVersion"].as_str() {
                let message = format!("the object has been modified (sent {sent:?})");
                return status(StatusCode::CONFLICT, "Conflict", message);
            }
            store(&mut state, path, object, StatusCode::OK)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            method.to_string(),
        ),
    }
}

fn store(
    state: &mut State,
    path: String,
    mut object: Value,
    code: StatusCode,
) -> Response<Full<Bytes>> {
    state.next_version += 1;
    object["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
    *state.writes.entry(path.clone()).or_default() += 1;
    state.objects.insert(path, object.clone());
    reply(code, &object)
}
