//! The admin CLI's side of the admin API: one authenticated JSON call at a time, answered as the
//! raw JSON value (so `--json` passes through fields this CLI does not know yet) or as one of
//! three errors that decide the exit status: the locator refused ([`CallError::Api`]), it could
//! not be reached ([`CallError::Unreachable`]), or it answered something that is not the admin
//! API ([`CallError::Unexpected`]).

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::Value;

/// An operator waits at a prompt: a locator that does not accept a connection within 5 seconds
/// is reported as unreachable rather than left hanging.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The slowest admin call, a GeoIP reload of a City database, takes a few seconds; 30 leaves room
/// for a busy locator without letting a stuck one hold the terminal.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Error bodies that are not the API's JSON (a proxy's HTML page) are cut to this many
/// characters in messages.
const MAX_SHOWN_BODY: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The locator answered with an error status.
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String },
    /// No answer: connection refused, DNS, TLS, timeout, connection lost mid-answer.
    #[error("cannot reach the locator at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// A success status with a body that is not JSON (the URL is not a locator's).
    #[error("unexpected answer from {url}: {reason}")]
    Unexpected { url: String, reason: String },
}

/// Why the client could not be built (a bad `--ca-file`).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] duet_ws::tls::TlsError),
    #[error("HTTP client setup failed: {0}")]
    Http(#[from] reqwest::Error),
}

/// The API's error shape: `{"error": {"code": ..., "message": ...}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: String,
    message: String,
}

/// Calls the admin API of one locator with the admin token.
pub struct AdminClient {
    base: Url,
    /// Sent as `Authorization: Bearer`; never printed.
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for an `http://` or `https://` base URL; `https` trusts the system roots and the
    /// certificates in `ca_file`, as every duet client does.
    pub fn new(base: Url, token: String, ca_file: Option<&Path>) -> Result<AdminClient, SetupError> {
        duet_ws::tls::install_default_provider();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("duet-locator/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            for cert in duet_ws::tls::read_pem_certs(path)? {
                builder = builder.add_root_certificate(reqwest::Certificate::from_der(&cert)?);
            }
        }
        Ok(AdminClient { base, token, http: builder.build()? })
    }

    /// `base` followed by `segments`, each percent-encoded as one path segment (an edge id cannot
    /// smuggle a `/` or `?` into the route).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends one request (with `body` as JSON, if any) and answers the response's JSON, or `None`
    /// for an empty success (`204 No Content`).
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Option<Value>, CallError> {
        self.call_with_query(method, segments, &[], body).await
    }

    /// [`AdminClient::call`] with query parameters (`None` values are left out).
    pub async fn call_with_query(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, Option<String>)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, CallError> {
        let mut url = self.url(segments);
        let present: Vec<(&str, &str)> = query.iter().filter_map(|(k, v)| Some((*k, v.as_deref()?))).collect();
        if !present.is_empty() {
            url.query_pairs_mut().extend_pairs(present);
        }
        let mut request = self.http.request(method, url.clone()).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| CallError::Unreachable { url: self.base.to_string(), cause: cause(&e) };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| CallError::Unexpected {
            url: url.to_string(),
            reason: format!("HTTP {} with a body that is not JSON ({e}); is this a duet locator?", status.as_u16()),
        })
    }
}

/// The error for an error status: the API's code and message, or, for a body in another shape
/// (a proxy's page), its beginning under the code `unknown`.
pub fn api_error(status: reqwest::StatusCode, body: &[u8]) -> CallError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else if text.chars().count() > MAX_SHOWN_BODY {
                format!("{}...", text.chars().take(MAX_SHOWN_BODY).collect::<String>())
            } else {
                text
            };
            ("unknown".to_owned(), message)
        }
    };
    CallError::Api { status: status.as_u16(), code, message }
}

/// What went wrong underneath a transport error: the innermost cause ("Connection refused",
/// "invalid peer certificate: UnknownIssuer", a DNS failure) says it best; reqwest's own message
/// only repeats the URL.
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!(
            "no answer in time ({}s to connect, {}s in all)",
            CONNECT_TIMEOUT.as_secs(),
            REQUEST_TIMEOUT.as_secs()
        );
    }
    let mut innermost: &dyn std::error::Error = e;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn api_errors_show_message_code_and_status() {
        let body = br#"{"error": {"code": "not_found", "message": "no edge has id \"edge-9\""}}"#;
        let err = api_error(StatusCode::NOT_FOUND, body);
        assert_eq!(err.to_string(), r#"no edge has id "edge-9" (not_found, HTTP 404)"#);
        let body = br#"{"error": {"code": "unauthorized", "message": "missing or wrong credentials"}}"#;
        assert_eq!(
            api_error(StatusCode::UNAUTHORIZED, body).to_string(),
            "missing or wrong credentials (unauthorized, HTTP 401)"
        );
    }

    #[test]
    fn other_error_bodies_are_shown_short() {
        let err = api_error(StatusCode::BAD_GATEWAY, b"<html>\n  <body>bad gateway</body>\n</html>\n");
        assert_eq!(err.to_string(), "<html> <body>bad gateway</body> </html> (unknown, HTTP 502)");
        let err = api_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(err.to_string(), "Service Unavailable (unknown, HTTP 503)");
        let long = "x".repeat(1000);
        let CallError::Api { message, .. } = api_error(StatusCode::INTERNAL_SERVER_ERROR, long.as_bytes()) else {
            panic!("an error status is an API error");
        };
        assert_eq!(message.len(), MAX_SHOWN_BODY + 3);
    }

    #[test]
    fn path_segments_are_encoded_below_the_base() {
        let client = AdminClient::new(Url::parse("https://ops.example/duet/").unwrap(), "t".into(), None).unwrap();
        assert_eq!(
            client.url(&["api", "v1", "admin", "edges", "a/b?c", "suspend"]).as_str(),
            "https://ops.example/duet/api/v1/admin/edges/a%2Fb%3Fc/suspend"
        );
        let client = AdminClient::new(Url::parse("http://127.0.0.1:8080").unwrap(), "t".into(), None).unwrap();
        assert_eq!(client.url(&["api", "v1", "admin", "edges"]).as_str(), "http://127.0.0.1:8080/api/v1/admin/edges");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = AdminClient::new(Url::parse(&format!("http://{addr}")).unwrap(), "t".into(), None).unwrap();
        let err = client.call(Method::GET, &["api", "v1", "admin", "edges"], None).await.unwrap_err();
        assert!(matches!(err, CallError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
