//! The fake API server's objects: serving a request against them (lists, gets, creates,
//! replaces and merge patches with `resourceVersion` preconditions, deletes), the change log
//! watches read, and the HTTP answers (`Status` objects, JSON bodies, query strings).

use std::collections::BTreeMap;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::fake_api::{Body, Change, State};

pub(super) fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    reply(code, &status_object(code.as_u16(), reason, message))
}

pub(super) fn status_object(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}

pub(super) fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `a=b&c=d`, percent-decoded.
pub(super) fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

pub(super) fn decode(s: &str) -> String {
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
pub(super) fn is_collection(path: &str) -> bool {
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

pub(super) fn in_collection(path: &str, collection: &str, name: Option<&str>) -> bool {
    let Some(item) = path
        .strip_prefix(collection)
        .and_then(|p| p.strip_prefix('/'))
    else {
        return false;
    };
    !item.contains('/') && name.is_none_or(|n| n == item)
}

pub(super) fn items(state: &State, collection: &str, name: Option<&str>) -> Vec<Value> {
    state
        .objects
        .iter()
        .filter(|(path, _)| in_collection(path, collection, name))
        .map(|(_, object)| object.clone())
        .collect()
}

pub(super) fn not_found(path: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{path} not found"),
    )
}

pub(super) fn serve(
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
pub(super) fn precondition(
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

pub(super) fn store(
    state: &mut State,
    path: String,
    mut object: Value,
    kind: &'static str,
) -> Value {
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

pub(super) fn remove(state: &mut State, path: &str) -> Option<Value> {
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
