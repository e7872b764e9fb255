//! The Confluent Schema Registry REST client: the two calls this project
//! makes, as Confluent documents them (Karapace serves the same API).
//! - `GET /schemas/ids/{id}`: a writer's schema by the id in a record.
//! - `POST /subjects/{subject}/versions`: register a schema, get its id
//!   (the id of the identical schema when it is already registered).
//!
//! One attempt per call: whoever calls decides about retries (the sink
//! backs off and gives up after a deadline; the CLI reports the failure).

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

use crate::error::{Error, Result};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Confluent's error code for "schema not found".
const SCHEMA_NOT_FOUND: i64 = 40403;

/// Where the registry is and how to log in.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    /// `Basic …`, from `user:password` (Confluent's `basic.auth.user.info`).
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("RegistryClient").field("base", &self.base).field("authenticated", &self.authorization.is_some()).finish()
    }
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    /// Absent means AVRO (Confluent omits it for Avro schemas).
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error_code: i64,
    message: String,
}

impl RegistryClient {
    /// A client for the registry at `url` (`http://` or `https://`, no
    /// credentials in it), with `user:password` for basic auth, and a
    /// `timeout` for each call.
    ///
    /// # Errors
    /// [`Error::RegistryRefused`] for a URL with credentials or another scheme.
    pub fn new(url: &str, basic_auth: Option<&str>, timeout: Duration) -> Result<Self> {
        // Credentials first, and the URL never echoed: "user:pw@host" without a
        // scheme would otherwise be printed whole by the scheme check.
        let authority = url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(Error::RegistryRefused("put the registry's credentials in its basic-auth setting, not in the URL (which is logged)".into()));
        }
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(Error::RegistryRefused("schema registry URL must start with http:// or https://".into()));
        }
        let tls = TlsConfig::builder().provider(TlsProvider::NativeTls).root_certs(RootCerts::PlatformVerifier).build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(tls)
            .build()
            .new_agent();
        let authorization = basic_auth.map(|user_info| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_info)));
        Ok(Self { base: url.trim_end_matches('/').to_owned(), authorization, agent })
    }

    /// The registry's URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The schema text registered under `id`.
    ///
    /// # Errors
    /// [`Error::UnknownSchema`] (404 / 40403), [`Error::RegistryUnavailable`]
    /// (no answer, 5xx), [`Error::RegistryRefused`] (401, 403, another 4xx,
    /// a schema that is not Avro, an answer that is not the documented JSON).
    pub fn schema_by_id(&self, id: u32) -> Result<String> {
        let mut request = self.agent.get(format!("{}/schemas/ids/{id}", self.base)).header("Accept", CONTENT_TYPE);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.call().map_err(|e| self.unavailable(&e))?;
        let answer: SchemaAnswer = self.answer(response, Some(id))?;
        match answer.schema_type.as_deref() {
            None | Some("AVRO") => Ok(answer.schema),
            Some(other) => Err(Error::IncompatibleSchema { id, reason: format!("a {other} schema, not Avro") }),
        }
    }

    /// Registers `schema` under `subject` and returns its id.
    ///
    /// # Errors
    /// As [`RegistryClient::schema_by_id`]; 409 (incompatible with the
    /// subject's compatibility rule) and 422 (invalid schema) are refusals.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let body = serde_json::json!({ "schema": schema }).to_string();
        let mut request = self
            .agent
            .post(format!("{}/subjects/{subject}/versions", self.base))
            .header("Accept", CONTENT_TYPE)
            .header("Content-Type", CONTENT_TYPE);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.send(body.as_bytes()).map_err(|e| self.unavailable(&e))?;
        let answer: IdAnswer = self.answer(response, None)?;
        Ok(answer.id)
    }

    fn unavailable(&self, error: &ureq::Error) -> Error {
        Error::RegistryUnavailable(format!("{}: {error}", self.base))
    }

    /// The documented JSON of a 200, or the error the status and body say.
    fn answer<T: for<'de> Deserialize<'de>>(&self, mut response: ureq::http::Response<ureq::Body>, id: Option<u32>) -> Result<T> {
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| self.unavailable(&e))?;
        if status == 200 {
            // A 200 that is not the documented JSON is a proxy's or a
            // gateway's page, not the registry's answer: try again later.
            return serde_json::from_str(&text)
                .map_err(|e| Error::RegistryUnavailable(format!("{}: unexpected answer ({e}): {}", self.base, excerpt(&text))));
        }
        let detail = serde_json::from_str::<ErrorAnswer>(&text).ok();
        match (status, &detail, id) {
            (404, Some(ErrorAnswer { error_code: SCHEMA_NOT_FOUND, .. }), Some(id)) | (404, None, Some(id)) => Err(Error::UnknownSchema(id)),
            // Timed out or rate-limited (managed registries answer 429): not now.
            (408 | 429 | 500..=599, _, _) => Err(Error::RegistryUnavailable(format!("{}: HTTP {status}: {}", self.base, excerpt(&text)))),
            (_, Some(detail), _) => Err(Error::RegistryRefused(format!("{}: HTTP {status}, error {}: {}", self.base, detail.error_code, detail.message))),
            (_, None, _) => Err(Error::RegistryRefused(format!("{}: HTTP {status}: {}", self.base, excerpt(&text)))),
        }
    }
}

/// The start of a body, for messages.
fn excerpt(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_that_does_not_answer_is_unavailable_not_refused() {
        // Port 1 on the loopback refuses at once.
        let client = RegistryClient::new("http://127.0.0.1:1", Some("user:pw"), Duration::from_secs(2)).unwrap();
        let error = client.schema_by_id(1).unwrap_err();
        assert!(matches!(&error, Error::RegistryUnavailable(m) if m.contains("127.0.0.1:1")), "{error}");
        assert!(error.is_transient());
        assert_eq!(error.class_name(), "bandit.RegistryUnavailable");
        assert!(matches!(client.register("t-value", "{}"), Err(Error::RegistryUnavailable(_))));
    }

    #[test]
    fn urls_with_credentials_or_another_scheme_are_refused_and_debug_hides_the_password() {
        assert!(matches!(RegistryClient::new("registry:8081", None, Duration::from_secs(1)), Err(Error::RegistryRefused(m)) if m.contains("http://")));
        assert!(matches!(RegistryClient::new("https://u:p@registry", None, Duration::from_secs(1)), Err(Error::RegistryRefused(m)) if m.contains("not in the URL")));
        let client = RegistryClient::new("https://registry:8081/", Some("reader:s3cret"), Duration::from_secs(1)).unwrap();
        assert_eq!(client.url(), "https://registry:8081");
        let shown = format!("{client:?}");
        assert!(shown.contains("authenticated: true") && !shown.contains("s3cret"), "{shown}");
        // RFC 7617: base64 of user-id ":" password.
        assert_eq!(client.authorization.as_deref(), Some("Basic cmVhZGVyOnMzY3JldA=="));
    }
}
