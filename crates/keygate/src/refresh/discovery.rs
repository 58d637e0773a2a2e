//! Where the key set lives: the configured JWKS URL, or the one OpenID Connect Discovery
//! names for the issuer, looked up once and remembered.

use http::HeaderMap;
use serde::Deserialize;
use url::Url;

use super::lock;
use crate::config::KeySource;
use crate::fetch::FetchError;
use crate::provider::Provider;

impl Provider {
    /// The JWKS URL if known without a request: configured, or discovered earlier.
    pub(super) fn known_jwks_url(&self) -> Option<Url> {
        match &self.config.source {
            KeySource::Url(url) => Some(url.clone()),
            KeySource::Discovery(_) => lock(&self.refresher.state).discovered.clone(),
            KeySource::Static(_) | KeySource::Urls(_) => None,
        }
    }

    /// The JWKS URL: configured, or discovered from the issuer (OpenID Connect Discovery 1.0).
    pub(super) async fn jwks_url(&self) -> Result<Url, FetchError> {
        let discovery = match &self.config.source {
            KeySource::Url(url) => return Ok(url.clone()),
            // Fetched per URL by `sources.rs`, never through here.
            KeySource::Urls(urls) => return Ok(urls[0].clone()),
            KeySource::Discovery(url) => url,
            KeySource::Static(_) => {
                return Err(FetchError::Config("static key sets are not fetched".into()));
            }
        };
        if let Some(url) = lock(&self.refresher.state).discovered.clone() {
            return Ok(url);
        }
        let response = self.fetch_with_retries(discovery, HeaderMap::new()).await?;
        let url = self.discovered_endpoint(&response.body, Endpoint::Jwks)?;
        lock(&self.refresher.state).discovered = Some(url.clone());
        Ok(url)
    }

    /// The URL a discovery document names for `endpoint`, once its `issuer` is found to be
    /// exactly the configured one (OpenID Connect Discovery section 4.3).
    pub(crate) fn discovered_endpoint(
        &self,
        document: &[u8],
        endpoint: Endpoint,
    ) -> Result<Url, FetchError> {
        // Both members named, so each is refused when repeated; any JSON type is read here
        // and judged only for the member asked for.
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: Option<serde_json::Value>,
            introspection_endpoint: Option<serde_json::Value>,
        }
        let member = endpoint.member();
        let lacks =
            || FetchError::InvalidDocument(format!("discovery document lacks issuer or {member}"));
        let meta: Metadata = serde_json::from_slice(document).map_err(|_| lacks())?;
        if meta.issuer != *self.config.issuer {
            return Err(FetchError::InvalidDocument(
                "discovery document names a different issuer".into(),
            ));
        }
        let value = match endpoint {
            Endpoint::Jwks => meta.jwks_uri,
            Endpoint::Introspection => meta.introspection_endpoint,
        };
        let text = value
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .ok_or_else(lacks)?;
        Url::parse(text).map_err(|_| FetchError::InvalidDocument(format!("{member} is not a URL")))
    }
}

/// An endpoint a discovery document names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    /// `jwks_uri`.
    Jwks,
    /// `introspection_endpoint`.
    Introspection,
}

impl Endpoint {
    fn member(self) -> &'static str {
        match self {
            Endpoint::Jwks => "jwks_uri",
            Endpoint::Introspection => "introspection_endpoint",
        }
    }
}
