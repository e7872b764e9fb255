//! An in-memory Confluent Schema Registry for the tests: the endpoints our
//! clients use, as Confluent documents them (no Schema Registry server can
//! be installed on these machines). It serves
//! - `GET /schemas/ids/{id}`: `{"schema": "…"}`, or 404 with error_code 40403;
//! - `POST /subjects/{subject}/versions` with `{"schema": "…"}`: `{"id": n}`,
//!   the same id for the same schema (compared as JSON) under any subject;
//!   422 (error_code 42201) for a body that is not a schema;
//! - 401 (error_code 401) without the right basic auth, when it has one;
//! - 404 (error_code 404) for anything else.
//!
//! Not served: compatibility rules (every schema is accepted), versions,
//! deletes, contexts. For outages it can answer 503 to everything
//! ([`MockRegistry::set_available`]). Requests for each schema id are counted,
//! so tests can see the clients' caches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, Default)]
struct State {
    /// Schema texts; the id is the index + 1.
    schemas: Vec<String>,
    /// Subject → ids registered under it, in version order.
    subjects: BTreeMap<String, Vec<u32>>,
    /// GET /schemas/ids/{id} requests per id.
    fetches: BTreeMap<u32, usize>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    available: AtomicBool,
    /// `Basic …` the requests must carry, if any.
    authorization: Option<String>,
}

/// A running registry on a free loopback port, stopped on drop.
pub struct MockRegistry {
    pub port: u16,
    server: Arc<Server>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockRegistry").field("port", &self.port).finish()
    }
}

impl MockRegistry {
    /// A registry without authentication.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A registry that answers only requests with basic auth `user:password`.
    pub fn with_basic_auth(user_info: &str) -> Self {
        use base64::Engine as _;
        Self::launch(Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_info))))
    }

    fn launch(authorization: Option<String>) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").unwrap_or_else(|e| panic!("registry: {e}")));
        let port = server.server_addr().to_ip().map(|addr| addr.port()).unwrap_or_else(|| panic!("registry: no port"));
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), available: AtomicBool::new(true), authorization });
        let thread = {
            let (server, shared) = (server.clone(), shared.clone());
            std::thread::spawn(move || {
                // Ends when `unblock` is called (drop).
                for request in server.incoming_requests() {
                    serve(&shared, request);
                }
            })
        };
        Self { port, server, shared, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Registers `schema` under `subject` as the HTTP endpoint would.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        register(&mut self.shared.state.lock().unwrap_or_else(|e| e.into_inner()), subject, schema)
    }

    /// The ids registered under `subject`, in version order.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).subjects.get(subject).cloned().unwrap_or_default()
    }

    /// How often `GET /schemas/ids/{id}` was asked.
    pub fn fetches(&self, id: u32) -> usize {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).fetches.get(&id).copied().unwrap_or(0)
    }

    /// While false, every request is answered 503, as a registry that is
    /// down behind its load balancer.
    pub fn set_available(&self, available: bool) {
        self.shared.available.store(available, Ordering::SeqCst);
    }
}

impl Drop for MockRegistry {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The id of `schema` (registering it if new) and its place under `subject`.
fn register(state: &mut State, subject: &str, schema: &str) -> u32 {
    let parsed: Option<Value> = serde_json::from_str(schema).ok();
    let existing = state.schemas.iter().position(|known| serde_json::from_str::<Value>(known).ok() == parsed);
    let id = match existing {
        Some(index) => index as u32 + 1,
        None => {
            state.schemas.push(schema.to_owned());
            state.schemas.len() as u32
        }
    };
    let versions = state.subjects.entry(subject.to_owned()).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    id
}

fn reply(request: Request, status: u16, body: &Value) {
    let header = Header::from_bytes("Content-Type", CONTENT_TYPE).unwrap_or_else(|()| panic!("header"));
    let _ = request.respond(Response::from_string(body.to_string()).with_status_code(status).with_header(header));
}

fn error(request: Request, status: u16, code: u32, message: &str) {
    reply(request, status, &json!({ "error_code": code, "message": message }));
}

fn serve(shared: &Shared, mut request: Request) {
    if !shared.available.load(Ordering::SeqCst) {
        return error(request, 503, 50301, "Service Unavailable");
    }
    if let Some(expected) = &shared.authorization {
        let given = request.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.as_str().to_owned());
        if given.as_deref() != Some(expected.as_str()) {
            return error(request, 401, 401, "Unauthorized");
        }
    }
    let url = request.url().to_owned();
    let parts: Vec<&str> = url.trim_start_matches('/').split('/').collect();
    match (request.method(), parts.as_slice()) {
        (Method::Get, ["schemas", "ids", id]) => {
            let Ok(id) = id.parse::<u32>() else { return error(request, 404, 40403, "Schema not found") };
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            *state.fetches.entry(id).or_default() += 1;
            match state.schemas.get((id as usize).wrapping_sub(1)).cloned() {
                Some(schema) => {
                    drop(state);
                    reply(request, 200, &json!({ "schema": schema }));
                }
                None => {
                    drop(state);
                    error(request, 404, 40403, &format!("Schema {id} not found"));
                }
            }
        }
        (Method::Post, ["subjects", subject, "versions"]) => {
            let subject = (*subject).to_owned();
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let schema = serde_json::from_str::<Value>(&body).ok().and_then(|v| v.get("schema").and_then(Value::as_str).map(str::to_owned));
            match schema.filter(|text| serde_json::from_str::<Value>(text).is_ok()) {
                Some(schema) => {
                    let id = register(&mut shared.state.lock().unwrap_or_else(|e| e.into_inner()), &subject, &schema);
                    reply(request, 200, &json!({ "id": id }));
                }
                None => error(request, 422, 42201, "Invalid schema"),
            }
        }
        _ => error(request, 404, 404, "HTTP 404 Not Found"),
    }
}

/// How long tests give a registry call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
