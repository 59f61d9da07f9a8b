//! A minimal HTTP/1.1 client on hyper's connection API: one TCP connection per [`Connection`],
//! kept alive, one request at a time. The load shapes in [`crate::drive`] decide how many
//! connections there are and when each sends; nothing here pools, retries or queues, so what is
//! measured is the server plus one loopback round trip.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why an exchange failed before a status came back.
#[derive(Debug)]
pub enum TransportError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Connect(e) => write!(f, "connect: {e}"),
            TransportError::Http(e) if e.is_closed() || e.is_incomplete_message() => f.write_str("connection closed"),
            TransportError::Http(e) => write!(f, "http: {e}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// The one request a load phase repeats.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    /// `Host` header: the server's address.
    pub host: String,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
    /// The status a successful answer has; any other counts as an error.
    pub expect: StatusCode,
}

impl RequestSpec {
    /// A JSON POST to `path` on `addr` expecting `expect`.
    pub fn post_json(addr: SocketAddr, path: &str, body: &'static str, expect: StatusCode) -> RequestSpec {
        RequestSpec {
            method: Method::POST,
            host: addr.to_string(),
            path: path.to_owned(),
            content_type: Some("application/json"),
            body: Bytes::from_static(body.as_bytes()),
            expect,
        }
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(self.method.clone()).uri(&self.path).header(HOST, &self.host);
        if let Some(ct) = self.content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder.body(Full::new(self.body.clone())).expect("a request built from valid parts")
    }
}

async fn tcp(addr: SocketAddr) -> Result<TokioIo<TcpStream>, TransportError> {
    let stream = TcpStream::connect(addr).await.map_err(TransportError::Connect)?;
    stream.set_nodelay(true).map_err(TransportError::Connect)?;
    Ok(TokioIo::new(stream))
}

/// A keep-alive connection; its I/O runs in a task of its own until either side closes it.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Connection, TransportError> {
        let (sender, conn) =
            hyper::client::conn::http1::handshake(tcp(addr).await?).await.map_err(TransportError::Http)?;
        tokio::spawn(async move {
            // Ends when the connection closes; a failure shows up in the next request instead.
            let _ = conn.await;
        });
        Ok(Connection { sender })
    }

    /// False once the server or an error closed the connection.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends `spec`'s request and reads the whole answer; the status if one came back.
    pub async fn exchange(&mut self, spec: &RequestSpec) -> Result<StatusCode, TransportError> {
        self.sender.ready().await.map_err(TransportError::Http)?;
        let response = self.sender.send_request(spec.build()).await.map_err(TransportError::Http)?;
        let status = response.status();
        response.into_body().collect().await.map_err(TransportError::Http)?;
        Ok(status)
    }
}

/// `GET path` on a connection of its own (closed afterwards): readiness checks.
pub async fn get_status(addr: SocketAddr, path: &str) -> Result<StatusCode, TransportError> {
    get(addr, path).await.map(|(status, _)| status)
}

/// `GET path` on a connection of its own (closed afterwards): the status and the whole body
/// (a metrics page).
pub async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), TransportError> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(tcp(addr).await?)
        .await
        .map_err(TransportError::Http)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::builder()
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONNECTION, "close")
        .body(Empty::new())
        .expect("a request built from valid parts");
    let result = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
    .await
    .map_err(TransportError::Http);
    driver.abort();
    result
}
