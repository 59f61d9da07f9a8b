//! Request bodies: optional JSON, bounded, with one set of errors for every endpoint.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::{ApiError, MAX_BODY_BYTES};

/// Parses an optional JSON body: empty (or only whitespace) is `T::default()`; anything else
/// must be JSON, with `Content-Type: application/json` when a content type is given.
pub fn parse_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(MAX_BODY_BYTES)
        } else {
            ApiError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType(format!("content type {mime:?} is not application/json")));
        }
    }
    // serde fills a struct from a JSON array too (fields by position): only objects are bodies.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest("the JSON body must be an object".into()));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        name: Option<String>,
    }

    #[test]
    fn only_objects_are_bodies() {
        let parse = |s: &'static str| parse_json::<Body>(&HeaderMap::new(), Ok(Bytes::from_static(s.as_bytes())));
        assert!(parse(" {\"name\": \"x\"}").is_ok());
        assert!(parse("").is_ok(), "an empty body is the defaults");
        for bad in ["[\"x\"]", "[null]", "\"x\"", "1", "null"] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("object"), "{bad}: {err}");
        }
    }
}
