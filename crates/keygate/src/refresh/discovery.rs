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
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let meta: Metadata = serde_json::from_slice(&response.body).map_err(|_| {
            FetchError::InvalidDocument("discovery document lacks issuer or jwks_uri".into())
        })?;
        // OpenID Connect Discovery section 4.3: the issuer must be exactly the one configured.
        if meta.issuer != *self.config.issuer {
            return Err(FetchError::InvalidDocument(
                "discovery document names a different issuer".into(),
            ));
        }
        let url = Url::parse(&meta.jwks_uri)
            .map_err(|_| FetchError::InvalidDocument("jwks_uri is not a URL".into()))?;
        lock(&self.refresher.state).discovered = Some(url.clone());
        Ok(url)
    }
}
