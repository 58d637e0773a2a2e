//! One introspection request (RFC 7662 section 2.1): the endpoint (configured, or read once
//! from the issuer's discovery document), the form, the client's credentials
//! (`client_secret_basic`, RFC 6749 section 2.3.1) and the reading of the answer.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderValue};
use http::{HeaderMap, StatusCode};
use url::Url;
use url::form_urlencoded;

use super::introspector::{Introspector, UNAVAILABLE_RETRY};
use super::{ClientAuth, IntrospectionConfig, IntrospectionError};
use crate::config::discovery_url;
use crate::fetch::{FetchError, FetchRequest, PostRequest};
use crate::provider::{Counters, Provider};
use crate::refresh::{Endpoint, lock};

/// What the endpoint said, before any claim is judged.
pub(crate) enum Said {
    /// `active: false`.
    Inactive,
    /// `active: true`, with the whole response as JSON text.
    Active(String),
}

impl Provider {
    /// Asks the provider's introspection endpoint about `token`. Anything but a 200 with a
    /// JSON object holding a boolean `active` means the token could not be checked.
    pub(crate) async fn introspect(
        &self,
        introspector: &Introspector,
        token: &str,
    ) -> Result<Said, IntrospectionError> {
        let unavailable = || IntrospectionError::Unavailable {
            retry_after: UNAVAILABLE_RETRY,
        };
        let url = self.introspection_url(introspector).await.map_err(|e| {
            tracing::warn!(provider = %self.id, error = %e, "introspection endpoint unknown");
            unavailable()
        })?;
        let request = post_request(
            &introspector.config,
            url,
            token,
            &self.config.issuer,
            self.clock.now(),
        )
        .ok_or_else(unavailable)?;
        let response = match self.fetcher.post(request).await {
            Ok(r) => r,
            Err(e) => {
                self.counters.count_introspection(match e {
                    FetchError::Timeout => "timeout",
                    _ => "error",
                });
                tracing::warn!(provider = %self.id, error = %e, "introspection failed");
                return Err(unavailable());
            }
        };
        self.counters.count_introspection(response.status.as_str());
        if response.status != StatusCode::OK {
            tracing::warn!(
                provider = %self.id,
                status = response.status.as_u16(),
                "introspection endpoint refused the call"
            );
            return Err(unavailable());
        }
        read_answer(&response.body).ok_or_else(|| {
            tracing::warn!(provider = %self.id, "introspection answer is not RFC 7662 JSON");
            unavailable()
        })
    }

    /// The endpoint: configured, or the `introspection_endpoint` of the issuer's discovery
    /// document (OpenID Connect Discovery section 4.3: its `issuer` must be ours).
    async fn introspection_url(&self, introspector: &Introspector) -> Result<Url, FetchError> {
        if let Some(url) = lock(&introspector.endpoint).clone() {
            return Ok(url);
        }
        let discovery = discovery_url(&self.config.issuer)
            .map_err(|e| FetchError::Config(format!("issuer is not a URL: {e}")))?;
        let response = self
            .fetcher
            .fetch(FetchRequest {
                url: discovery,
                headers: HeaderMap::new(),
            })
            .await?;
        if response.status != StatusCode::OK {
            return Err(FetchError::Status {
                status: response.status,
                retry_after: None,
            });
        }
        let url = self.discovered_endpoint(&response.body, Endpoint::Introspection)?;
        *lock(&introspector.endpoint) = Some(url.clone());
        Ok(url)
    }
}

impl Counters {
    /// Counts one call to the introspection endpoint that ended with `outcome`.
    pub(crate) fn count_introspection(&self, outcome: &str) {
        Counters::count_in(&self.introspections, outcome);
    }
}

/// The form and the client's credentials: `client_secret_basic` (id and secret each
/// form-encoded, then joined by `:` and base64-encoded, RFC 6749 section 2.3.1), or
/// `private_key_jwt` (a fresh assertion for `issuer`, signed at `now`, in the form). `None`
/// when the assertion cannot be signed.
fn post_request(
    config: &IntrospectionConfig,
    url: Url,
    token: &str,
    issuer: &str,
    now: SystemTime,
) -> Option<PostRequest> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token)
        .append_pair("token_type_hint", "access_token");
    let mut headers = HeaderMap::new();
    match &config.auth {
        ClientAuth::SecretBasic(secret) => {
            let encode =
                |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let credentials = format!("{}:{}", encode(&config.client_id), encode(secret.expose()));
            let basic = base64_simd::STANDARD.encode_to_string(credentials.as_bytes());
            if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {basic}")) {
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
        }
        ClientAuth::PrivateKeyJwt(key) => {
            let assertion = key.assertion(&config.client_id, issuer, now)?;
            form.append_pair("client_id", &config.client_id)
                .append_pair(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                )
                .append_pair("client_assertion", &assertion);
        }
    }
    Some(PostRequest {
        url,
        headers,
        body: Bytes::from(form.finish()),
    })
}

/// Reads an RFC 7662 section 2.2 answer: a JSON object whose `active` is a boolean.
fn read_answer(body: &[u8]) -> Option<Said> {
    let text = std::str::from_utf8(body).ok()?;
    // A map, not a struct: serde would also read a struct from an array.
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let active = object.get("active")?.as_bool()?;
    Some(if active {
        Said::Active(text.to_owned())
    } else {
        Said::Inactive
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::{ClientSecret, IntrospectionEndpoint};

    #[test]
    fn credentials_are_form_encoded_then_base64() {
        let config = IntrospectionConfig::new(
            IntrospectionEndpoint::Discovered,
            "rs:1",
            ClientSecret::new("p@ss word"),
        );
        let url = Url::parse("https://idp.example/introspect").unwrap();
        let request = post_request(
            &config,
            url,
            "a+b/c=",
            "https://idp.example",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        let auth = request.headers[AUTHORIZATION].to_str().unwrap();
        let decoded = base64_simd::STANDARD
            .decode_to_vec(auth.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"rs%3A1:p%40ss+word");
        assert!(request.headers[AUTHORIZATION].is_sensitive());
        assert_eq!(
            &request.body[..],
            b"token=a%2Bb%2Fc%3D&token_type_hint=access_token"
        );
        assert!(!format!("{request:?}").contains("a+b"));
    }

    #[test]
    fn only_an_object_with_a_boolean_active_is_an_answer() {
        assert!(matches!(
            read_answer(br#"{"active":false}"#),
            Some(Said::Inactive)
        ));
        assert!(matches!(
            read_answer(br#"{"active":true,"sub":"a"}"#),
            Some(Said::Active(t)) if t.contains("\"sub\"")
        ));
        for bad in [
            &b"{}"[..],
            br#"{"active":"true"}"#,
            br#"[true]"#,
            b"<html>",
            b"\xff",
        ] {
            assert!(read_answer(bad).is_none());
        }
    }
}
