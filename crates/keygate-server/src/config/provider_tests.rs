//! The `introspection_*`, `dpop*` and `server.external_url` keys.

use std::collections::HashMap;
use std::time::Duration;

use keygate::dpop::DpopMode;
use keygate::introspect::IntrospectionEndpoint;

use super::*;

const PROVIDER: &str = "[[providers]]\ntenant = \"acme\"\nname = \"main\"\n\
                        issuer = \"https://idp.example\"\naudiences = [\"api\"]\n";
const SECRET: &str = "s3cr3t-value-never-shown";
const VAR: &str = "KEYGATE_PROVIDER_ACME_MAIN_INTROSPECTION_SECRET";

fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::parse(text, &|name| vars.get(name).cloned())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    with_env(text, &[])
}

fn provider(extra: &str) -> String {
    format!("{PROVIDER}{extra}\n")
}

/// The error for `extra` on the provider, checked to name `key`.
fn refused(extra: &str, key: &str) -> ConfigError {
    let text = provider(extra);
    let e = parse(&text).expect_err(&text);
    assert_eq!(e.key, key, "{text}\n{e}");
    e
}

#[test]
fn introspection_is_off_without_a_client_id_and_defaults_with_one() {
    let c = parse(PROVIDER).unwrap();
    assert!(c.providers[0].config.introspection().is_none());
    assert_eq!(c.providers[0].config.dpop(), DpopMode::Off);
    assert_eq!(
        c.providers[0].config.dpop_iat_window(),
        Duration::from_secs(60)
    );

    let c = parse(&provider(&format!(
        "introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\""
    )))
    .unwrap();
    let i = c.providers[0].config.introspection().expect("on");
    assert_eq!(i.client_id(), "kg");
    assert_eq!(i.endpoint(), &IntrospectionEndpoint::Discovered);
    let defaults = keygate::introspect::IntrospectionConfig::new(
        IntrospectionEndpoint::Discovered,
        "kg",
        keygate::introspect::ClientSecret::new(SECRET),
    );
    assert_eq!(i, &defaults, "every bound at the library's default");
}

#[test]
fn every_introspection_key_is_read() {
    let c = parse(&provider(&format!(
        "introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\"\n\
         introspection_endpoint = \"https://idp.example/oauth2/introspect\"\n\
         introspection_cache_ttl = \"2m\"\nintrospection_negative_ttl = \"1s\"\n\
         introspection_rate_limit = 7\nintrospection_burst = 9\n\
         introspection_max_concurrent = 3\nintrospection_cache_entries = 11"
    )))
    .unwrap();
    let got = c.providers[0].config.introspection().unwrap();
    let want = keygate::introspect::IntrospectionConfig::new(
        IntrospectionEndpoint::Url("https://idp.example/oauth2/introspect".parse().unwrap()),
        "kg",
        keygate::introspect::ClientSecret::new(SECRET),
    )
    .positive_ttl(Duration::from_secs(120))
    .negative_ttl(Duration::from_secs(1))
    .rate_limit(7, 9)
    .max_concurrent(3)
    .cache_entries(11);
    assert_eq!(got, &want);

    // The burst follows the rate when not set.
    let c = parse(&provider(&format!(
        "introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\"\n\
         introspection_rate_limit = 5"
    )))
    .unwrap();
    let want = keygate::introspect::IntrospectionConfig::new(
        IntrospectionEndpoint::Discovered,
        "kg",
        keygate::introspect::ClientSecret::new(SECRET),
    )
    .rate_limit(5, 5);
    assert_eq!(c.providers[0].config.introspection().unwrap(), &want);
}

#[test]
fn bad_introspection_values_name_their_key() {
    let on =
        format!("introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\"\n");
    let cases = [
        ("introspection_rate_limit = 0", "introspection_rate_limit"),
        ("introspection_rate_limit = -1", "introspection_rate_limit"),
        ("introspection_burst = 0", "introspection_burst"),
        (
            "introspection_max_concurrent = 0",
            "introspection_max_concurrent",
        ),
        (
            "introspection_cache_entries = 0",
            "introspection_cache_entries",
        ),
        ("introspection_cache_ttl = 0", "introspection_cache_ttl"),
        (
            "introspection_cache_ttl = \"soon\"",
            "introspection_cache_ttl",
        ),
        (
            "introspection_negative_ttl = -5",
            "introspection_negative_ttl",
        ),
        (
            "introspection_endpoint = \"not a url\"",
            "introspection_endpoint",
        ),
        (
            "introspection_endpoint = \"http://idp.example/introspect\"",
            "introspection_endpoint",
        ),
        (
            "introspection_endpoint = \"ftp://idp.example/introspect\"",
            "introspection_endpoint",
        ),
        (
            "introspection_endpoint = \"https://user:pw@idp.example/introspect\"",
            "introspection_endpoint",
        ),
    ];
    for (line, key) in cases {
        let e = refused(&format!("{on}{line}"), &format!("providers[0].{key}"));
        assert!(!e.to_string().contains(SECRET), "{e}");
    }
    let e = refused(
        &format!("introspection_client_id = \"\"\nintrospection_client_secret = \"{SECRET}\""),
        "providers[0].introspection_client_id",
    );
    assert!(!e.to_string().contains(SECRET));
    refused(
        "introspection_client_id = \"kg\"\nintrospection_client_secret = \"\"",
        "providers[0].introspection_client_secret",
    );
}

#[test]
fn an_introspection_key_without_a_client_id_is_refused_by_name() {
    for key in [
        "introspection_endpoint = \"https://idp.example/i\"",
        "introspection_cache_ttl = \"1m\"",
        "introspection_negative_ttl = \"1s\"",
        "introspection_rate_limit = 1",
        "introspection_burst = 1",
        "introspection_max_concurrent = 1",
        "introspection_cache_entries = 1",
    ] {
        let name = key.split(' ').next().unwrap();
        let e = refused(key, &format!("providers[0].{name}"));
        assert!(e.problem.contains("introspection_client_id"), "{e}");
    }
    let e = refused(
        &format!("introspection_client_secret = \"{SECRET}\""),
        "providers[0].introspection_client_secret",
    );
    assert!(!e.to_string().contains(SECRET), "{e}");
}

#[test]
fn the_secret_comes_from_the_environment_first_and_is_never_shown() {
    assert_eq!(
        introspection_secret_env_var("acme-eu", "main.v2"),
        "KEYGATE_PROVIDER_ACME_EU_MAIN_V2_INTROSPECTION_SECRET"
    );
    let text =
        provider("introspection_client_id = \"kg\"\nintrospection_client_secret = \"from-file\"");
    let from_env = with_env(&text, &[(VAR, SECRET)]).unwrap();
    let want = keygate::introspect::IntrospectionConfig::new(
        IntrospectionEndpoint::Discovered,
        "kg",
        keygate::introspect::ClientSecret::new(SECRET),
    );
    assert_eq!(from_env.providers[0].config.introspection(), Some(&want));
    let only_env = with_env(
        &provider("introspection_client_id = \"kg\""),
        &[(VAR, SECRET)],
    )
    .unwrap();
    assert_eq!(only_env.providers[0].config.introspection(), Some(&want));

    // Missing from both: the error names the key and the variable.
    let e = refused(
        "introspection_client_id = \"kg\"",
        "providers[0].introspection_client_secret",
    );
    assert!(e.problem.contains(VAR), "{e}");

    // An empty secret from the environment names the variable, not the file key.
    let e = with_env(&provider("introspection_client_id = \"kg\""), &[(VAR, "")]).unwrap_err();
    assert_eq!(e.key, VAR);

    // Neither the validated configuration nor the file's shape prints the secret.
    let c = with_env(
        &provider(&format!(
            "introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\""
        )),
        &[],
    )
    .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("kg"), "{shown}");
    let file: file::FileConfig = toml::from_str(&provider(&format!(
        "introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\""
    )))
    .unwrap();
    assert!(!format!("{file:?}").contains(SECRET));
    // A syntax error in the entry does not quote the secret either.
    let e = parse(&provider(&format!(
        "introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\"\nintrospection_burst = \"x\""
    )))
    .unwrap_err();
    assert!(!e.to_string().contains(SECRET), "{e}");
}

#[test]
fn two_providers_reading_one_secret_variable_are_refused() {
    let text = String::from(
        "[[providers]]\ntenant = \"a-b\"\nname = \"c\"\nissuer = \"https://one.example\"\n\
         audiences = [\"x\"]\nintrospection_client_id = \"kg\"\nintrospection_client_secret = \"s1\"\n\
         [[providers]]\ntenant = \"a\"\nname = \"b_c\"\nissuer = \"https://two.example\"\n\
         audiences = [\"x\"]\nintrospection_client_id = \"kg\"\nintrospection_client_secret = \"s2\"\n",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "providers[1].name");
    assert!(
        e.problem
            .contains("KEYGATE_PROVIDER_A_B_C_INTROSPECTION_SECRET"),
        "{e}"
    );
    // Without introspection on the second, nothing reads the variable twice.
    let text = text.replace(
        "introspection_client_id = \"kg\"\nintrospection_client_secret = \"s2\"\n",
        "",
    );
    assert_eq!(parse(&text).unwrap().providers.len(), 2);
}

#[test]
fn a_discovered_endpoint_needs_a_usable_issuer() {
    let on =
        format!("introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\"\n");
    // An http issuer with its own JWKS URL: the keys are fine, discovery is not.
    let text = format!(
        "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"http://idp.example\"\n\
         jwks_uri = \"https://idp.example/jwks\"\naudiences = [\"x\"]\n{on}"
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "providers[0].introspection_endpoint");
    assert!(e.problem.contains("discovered"), "{e}");
    // A given https endpoint is fine with that issuer.
    let fixed = format!("{text}introspection_endpoint = \"https://idp.example/introspect\"\n");
    assert!(parse(&fixed).is_ok());
    // Loopback http, allowed as for the key set.
    let loopback = format!(
        "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"http://127.0.0.1:9000\"\n\
         audiences = [\"x\"]\nallow_insecure_http = true\n{on}"
    );
    assert!(parse(&loopback).is_ok());
    let with_url = format!("{loopback}introspection_endpoint = \"http://localhost:9000/i\"\n");
    assert!(parse(&with_url).is_ok());
    let remote = format!("{loopback}introspection_endpoint = \"http://idp.example/i\"\n");
    assert_eq!(
        parse(&remote).unwrap_err().key,
        "providers[0].allow_insecure_http"
    );
}

#[test]
fn dpop_modes_and_window_are_read_and_checked() {
    for (mode, want) in [
        ("off", DpopMode::Off),
        ("allowed", DpopMode::Allowed),
        ("required", DpopMode::Required),
    ] {
        let c = parse(&provider(&format!(
            "dpop = \"{mode}\"\ndpop_iat_window = \"30s\""
        )))
        .unwrap();
        assert_eq!(c.providers[0].config.dpop(), want);
        assert_eq!(
            c.providers[0].config.dpop_iat_window(),
            Duration::from_secs(30)
        );
    }
    let e = refused("dpop = \"Required\"", "providers[0].dpop");
    assert!(e.problem.contains("\"required\""), "{e}");
    refused("dpop = true", "providers[0].dpop");
    refused(
        "dpop = \"required\"\ndpop_iat_window = 0",
        "providers[0].dpop_iat_window",
    );
    refused("dpop_iat_window = \"2h\"", "providers[0].dpop_iat_window");
    refused(
        "dpop_iat_window = \"later\"",
        "providers[0].dpop_iat_window",
    );
}

#[test]
fn external_url_is_an_origin_only() {
    let with = |url: &str| parse(&format!("[server]\nexternal_url = \"{url}\"\n{PROVIDER}"));
    assert!(parse(PROVIDER).unwrap().server.external_url.is_none());
    for good in [
        "https://api.example.com",
        "https://api.example.com/",
        "http://127.0.0.1:8443",
    ] {
        let c = with(good).unwrap();
        let url = c.server.external_url.unwrap();
        assert_eq!(url.path(), "/");
        assert_eq!(
            url.as_str().trim_end_matches('/'),
            good.trim_end_matches('/')
        );
    }
    for bad in [
        "api.example.com",
        "ftp://api.example.com",
        "https://api.example.com/base",
        "https://api.example.com/?q=1",
        "https://api.example.com/#top",
        "https://user:pw@api.example.com/",
        "",
    ] {
        let e = with(bad).unwrap_err();
        assert_eq!(e.key, "server.external_url", "{bad}: {e}");
    }
}

#[test]
fn provider_keys_reload_and_external_url_reloads() {
    let base = parse(PROVIDER).unwrap();
    for changed in [
        provider("dpop = \"required\""),
        provider(&format!(
            "introspection_client_id = \"kg\"\nintrospection_client_secret = \"{SECRET}\""
        )),
        format!("[server]\nexternal_url = \"https://api.example.com\"\n{PROVIDER}"),
    ] {
        let new = parse(&changed).unwrap();
        assert_eq!(
            crate::reload::restart_required(&base, &new),
            None,
            "{changed}"
        );
    }
}

#[test]
fn private_key_jwt_takes_a_key_file_instead_of_a_secret() {
    use keygate::introspect::ClientAuth;

    let dir = std::env::temp_dir().join(format!("keygate-pkjwt-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("client.pem");
    std::fs::write(&key, keygate_test_support::oidc::RS_JWT_CLIENT_KEY_PEM).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let file = |path: &std::path::Path| {
        format!(
            "introspection_client_id = \"kg\"\nintrospection_client_key_file = \"{}\"",
            path.display()
        )
    };

    let c = parse(&provider(&file(&key))).unwrap();
    let i = c.providers[0].config.introspection().expect("on");
    assert!(
        matches!(i.auth(), ClientAuth::PrivateKeyJwt(k) if k.algorithm() == keygate::Algorithm::ES256),
        "{:?}",
        i.auth()
    );
    // Not both: a secret in the file or in the environment as well is refused.
    let both = format!("{}\nintrospection_client_secret = \"{SECRET}\"", file(&key));
    let e = refused(&both, "providers[0].introspection_client_key_file");
    assert!(!e.to_string().contains(SECRET), "{e}");
    let e = with_env(&provider(&file(&key)), &[(VAR, SECRET)]).unwrap_err();
    assert_eq!(e.key, "providers[0].introspection_client_key_file");
    // A missing file, or one holding no key.
    refused(
        &file(&dir.join("missing.pem")),
        "providers[0].introspection_client_key_file",
    );
    refused(
        &file(&garbage),
        "providers[0].introspection_client_key_file",
    );
    // Without the client id, the key file alone is refused by name.
    refused(
        &format!("introspection_client_key_file = \"{}\"", key.display()),
        "providers[0].introspection_client_key_file",
    );
    let _ = std::fs::remove_dir_all(dir);
}
