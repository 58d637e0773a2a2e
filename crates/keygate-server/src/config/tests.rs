use keygate::CacheSettings;

use super::duration::parse_duration;
use super::*;
use crate::apikey::Scope;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, &|_| None)
}

/// `fetch_timeout` governs each attempt, not only the HTTP client: an IdP that answers in
/// 6 s is fetched with `fetch_timeout = "10s"` (it used to be cut at the retry loop's own
/// 5 s per attempt, three times, and never loaded). Real time: the delay is the IdP's.
#[tokio::test]
async fn a_fetch_timeout_above_five_seconds_lets_a_six_second_idp_load() {
    use keygate_test_support::{StubIdp, StubResponse, TestKey, jwks};
    let idp = StubIdp::start().await;
    let key = TestKey::shared_p256("slow-idp");
    idp.set_response(
        "/jwks",
        StubResponse::json(200, jwks(&[key])).delay(Duration::from_secs(6)),
    );
    let text = format!(
        "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"{}\"\n\
             jwks_uri = \"{}\"\naudiences = [\"x\"]\nallow_insecure_http = true\n\
             fetch_timeout = \"10s\"\nfetch_attempts = 2",
        idp.issuer(),
        idp.jwks_url()
    );
    let mut config = parse(&text).unwrap();
    let verifier = keygate::Verifier::builder()
        .provider(config.providers.remove(0).config)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    verifier.warm_up().await;
    let status = verifier.status().remove(0);
    assert!(status.state.has_usable_keys(), "{status:?}");
    assert_eq!(status.kids, ["slow-idp"]);
    assert_eq!(idp.requests("/jwks"), 1);
    assert_eq!(status.counters.requests.get("200"), Some(&1));
    assert!(started.elapsed() >= Duration::from_secs(6));
}

const MINIMAL: &str = r#"
        [[providers]]
        tenant = "acme"
        name = "auth0"
        issuer = "https://acme.example/"
        audiences = ["api"]
    "#;

#[test]
fn minimal_file_gets_safe_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(c.server.admin_listen, DEFAULT_ADMIN_LISTEN.parse().unwrap());
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.providers.len(), 1);
    assert!(c.admin.keys.is_empty());
    assert!(c.dev_issuer.is_none());
    assert_eq!(c.providers[0].config.cache(), &CacheSettings::default());
}

#[test]
fn embedded_keys_are_ignored_unless_refused_and_hmac_says_why() {
    assert!(
        !parse(MINIMAL).unwrap().providers[0]
            .config
            .refuses_embedded_keys()
    );
    let c = parse(&format!("{MINIMAL}\nrefuse_embedded_keys = true")).unwrap();
    assert!(c.providers[0].config.refuses_embedded_keys());
    let e = parse(&format!("{MINIMAL}\nalgorithms = [\"ES512\", \"HS512\"]")).unwrap_err();
    assert_eq!(e.key, "providers[0].algorithms[1]");
    assert!(e.problem.contains("key-confusion"), "{}", e.problem);
    let e = parse(&format!("{MINIMAL}\nalgorithms = [\"XS1\"]")).unwrap_err();
    assert!(
        e.problem.contains("not a supported algorithm"),
        "{}",
        e.problem
    );
}

#[test]
fn several_jwks_uris_make_one_provider() {
    let c = parse(&format!(
        "{MINIMAL}\njwks_uris = [\"https://a.example/jwks\", \"https://b.example/keys\"]"
    ))
    .unwrap();
    let urls: Vec<&str> = c.providers[0]
        .config
        .jwks_uris()
        .iter()
        .map(url::Url::as_str)
        .collect();
    assert_eq!(urls, ["https://a.example/jwks", "https://b.example/keys"]);
    let nine: Vec<String> = (0..9)
        .map(|i| format!("\"https://a.example/{i}\""))
        .collect();
    let err = parse(&format!("{MINIMAL}\njwks_uris = [{}]", nine.join(", "))).unwrap_err();
    assert_eq!(err.key, "providers[0].jwks_uris");
}

#[test]
fn durations_accept_units_and_seconds() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    assert!(parse_duration("5 weeks").is_err());
    assert!(parse_duration("-5s").is_err());
    assert!(parse_duration("99999999999999999999d").is_err());
    let c = parse(&format!("{MINIMAL}\nstale_window = \"2h\"\nleeway = 10")).unwrap();
    assert_eq!(
        c.providers[0].config.cache().stale_window,
        Duration::from_secs(7200)
    );
}

#[test]
fn errors_name_the_key_at_fault() {
    let cases: &[(&str, &str)] = &[
        ("", "providers"),
        ("[server]\nlisten = \"nowhere\"", "server.listen"),
        (
            "[server]\nlisten = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"",
            "server.admin_listen",
        ),
        (
            "[[providers]]\ntenant = \"a b\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]",
            "providers[0].tenant",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nunknown_kid_burst = 0",
            "providers[0].unknown_kid_burst",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nfetch_attempts = 0",
            "providers[0].fetch_attempts",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nfetch_timeout = \"10s\"\nfetch_deadline = \"8s\"",
            "providers[0].fetch_deadline",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"",
            "providers[0].audiences",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"http://idp.example\"\naudiences = [\"x\"]",
            "providers[0].issuer",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uri = \"http://idp.example/jwks\"\nallow_insecure_http = true\naudiences = [\"x\"]",
            "providers[0].allow_insecure_http",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nalgorithms = [\"HS256\"]",
            "providers[0].algorithms[0]",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uris = [\"https://a/jwks\", \"http://b.example/jwks\"]\naudiences = [\"x\"]",
            "providers[0].jwks_uris[1]",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uris = [\"https://a/jwks\", \"nope\"]\naudiences = [\"x\"]",
            "providers[0].jwks_uris[1]",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uris = [\"https://a/jwks\", \"https://b/jwks\", \"https://a/jwks\"]\naudiences = [\"x\"]",
            "providers[0].jwks_uris[2]",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uri = \"https://a/jwks\"\njwks_uris = [\"https://b/jwks\"]\naudiences = [\"x\"]",
            "providers[0].jwks_uris",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uris = []\naudiences = [\"x\"]",
            "providers[0].jwks_uris",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nmin_ttl = \"1h\"\nmax_ttl = \"5m\"",
            "providers[0].min_ttl",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\n[providers.claims_to_headers]\nsub = \"X-Auth-Subject\"",
            "providers[0].claims_to_headers.sub",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\n[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://j\"\naudiences = [\"x\"]",
            "providers[1].name",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\n[[providers]]\ntenant = \"t\"\nname = \"q\"\nissuer = \"https://i\"\naudiences = [\"x\"]",
            "providers[1].issuer",
        ),
        (
            "[dev_issuer]\nlisten = \"0.0.0.0:8082\"",
            "dev_issuer.listen",
        ),
        (
            &format!("{MINIMAL}\n[[admin.keys]]\nid = \"ops\"\nscopes = [\"status:read\"]"),
            "admin.keys[0].hash",
        ),
        (
            &format!(
                "{MINIMAL}\n[[admin.keys]]\nid = \"ops\"\nhash = \"plaintext\"\nscopes = [\"status:read\"]"
            ),
            "admin.keys[0].hash",
        ),
        (
            &format!("{MINIMAL}\n[revocations]\nmax_token_lifetime = 0"),
            "revocations.max_token_lifetime",
        ),
    ];
    for (text, key) in cases {
        let err = parse(text).expect_err(text);
        assert_eq!(&err.key, key, "{text}: {err}");
        assert!(!err.problem.is_empty());
    }
}

#[test]
fn syntax_and_unknown_keys_say_where() {
    let err = parse("[server]\nlisn = \"127.0.0.1:1\"").unwrap_err();
    assert!(err.problem.contains("lisn"), "{err}");
    assert!(err.problem.contains("line 2"), "{err}");
    let err = parse("[[providers]\n").unwrap_err();
    assert!(err.problem.contains("line 1"), "{err}");
}

#[test]
fn admin_failure_limit_defaults_parses_and_names_the_key() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.admin.failure_limit, FailureLimit::default());
    let c = parse(&format!(
        "{MINIMAL}\n[admin]\nmax_failures = 3\nfailure_window = \"2s\""
    ))
    .unwrap();
    assert_eq!(
        c.admin.failure_limit,
        FailureLimit::new(3, Duration::from_secs(2)).unwrap()
    );
    for (text, key) in [
        ("max_failures = 0", "admin.max_failures"),
        ("failure_window = 0", "admin.failure_window"),
        ("failure_window = \"2d\"", "admin.failure_window"),
    ] {
        let err = parse(&format!("{MINIMAL}\n[admin]\n{text}")).unwrap_err();
        assert_eq!(err.key, key, "{text}: {err}");
    }
}

#[test]
fn admin_key_hash_comes_from_the_environment_when_set() {
    let hash = crate::apikey::hash_secret(b"s3cret-s3cret-s3cret").to_string();
    let text = format!(
        "{MINIMAL}\n[[admin.keys]]\nid = \"ci-bot\"\nscopes = [\"status:read\", \"jwks:flush\"]"
    );
    let c = Config::parse(&text, &|name| {
        (name == "KEYGATE_ADMIN_KEY_CI_BOT_HASH").then(|| hash.clone())
    })
    .unwrap();
    assert_eq!(c.admin.keys.len(), 1);
    assert!(c.admin.keys[0].hash.verify(b"s3cret-s3cret-s3cret"));
    assert_eq!(
        c.admin.keys[0].scopes,
        [Scope::StatusRead, Scope::JwksFlush]
    );
    let err = Config::parse(&text, &|name| {
        (name == "KEYGATE_ADMIN_KEY_CI_BOT_HASH").then(|| "nope".to_owned())
    })
    .unwrap_err();
    assert_eq!(err.key, "KEYGATE_ADMIN_KEY_CI_BOT_HASH");
}

#[test]
fn loopback_http_is_allowed_only_when_asked() {
    let text = "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"http://127.0.0.1:9/\"\naudiences = [\"x\"]\nallow_insecure_http = true\n[providers.claims_to_headers]\nemail = \"X-Auth-Email\"";
    let c = parse(text).unwrap();
    assert_eq!(
        c.providers[0].claims_to_headers,
        [("email".to_owned(), HeaderName::from_static("x-auth-email"))]
    );
}

#[test]
fn cluster_sections_validate_and_name_the_key_at_fault() {
    let redis = |rest: &str| {
        format!(
            "{MINIMAL}\n[cluster]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\n{rest}"
        )
    };
    let key = "[[cluster.keys]]\nid = \"k1\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    let ok = parse(&redis(key)).unwrap();
    let ClusterBackend::Redis(settings) = &ok.cluster.backend else {
        panic!("expected the redis backend");
    };
    assert_eq!(settings.prefix, "keygate");
    assert!(ok.cluster.accept_while_degraded);
    // The default is one node with no state file (load() puts one beside the file).
    assert!(matches!(
        parse(MINIMAL).unwrap().cluster.backend,
        ClusterBackend::Local { state_file: None }
    ));
    let cases: &[(String, &str)] = &[
        (redis(""), "cluster.keys"),
        (
            format!("{MINIMAL}\n[cluster]\nbackend = \"redis\"\n{key}"),
            "cluster.redis_url",
        ),
        (
            redis("[[cluster.keys]]\nid = \"k1\"\nsecret = \"short\"\n"),
            "cluster.keys[0].secret",
        ),
        (
            redis("[[cluster.keys]]\nid = \"k1\"\n"),
            "cluster.keys[0].secret",
        ),
        (redis(&format!("{key}{key}")), "cluster.keys[1].id"),
        (
            redis(&format!("prefix = \"a{{b}}\"\n{key}")),
            "cluster.prefix",
        ),
        (
            redis(&format!("max_log_len = 10\n{key}")),
            "cluster.max_log_len",
        ),
        (
            redis(&format!("fetch_lease = \"0s\"\n{key}")),
            "cluster.fetch_lease",
        ),
        (
            redis(&format!("state_file = \"x\"\n{key}")),
            "cluster.state_file",
        ),
        (
            format!("{MINIMAL}\n[cluster]\nbackend = \"redis\"\nredis_url = \"http://x\"\n{key}"),
            "cluster.redis_url",
        ),
        (
            format!("{MINIMAL}\n[cluster]\nbackend = \"etcd\"\n"),
            "cluster.backend",
        ),
        (
            format!("{MINIMAL}\n[cluster]\nredis_url = \"redis://x\"\n"),
            "cluster.redis_url",
        ),
    ];
    for (text, field) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key, *field, "{e}\n{text}");
    }
    // The secret may come from the environment instead of the file.
    let env = |name: &str| {
        (name == "KEYGATE_CLUSTER_KEY_K1_SECRET")
            .then(|| "fedcba9876543210fedcba9876543210".to_owned())
    };
    let text = redis("[[cluster.keys]]\nid = \"k1\"\n");
    assert!(Config::parse(&text, &env).is_ok());
}

/// A file under the temp dir with `content`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "keygate-config-{}-{:08x}-{name}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const CLUSTER_KEY: &str =
    "[[cluster.keys]]\nid = \"k1\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

fn cluster(body: &str) -> String {
    format!("{MINIMAL}\n[cluster]\nbackend = \"redis\"\n{body}\n{CLUSTER_KEY}")
}

fn test_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn sentinels_tls_and_acknowledgements_validate_and_name_the_key_at_fault() {
    // Sentinels instead of a URL; a URL without a port gets Sentinel's.
    let ok = parse(&cluster(
            "sentinels = [\"redis://:pw@10.0.0.1:26379\", \"redis://10.0.0.2\"]\nsentinel_master = \"kg\"\n\
             redis_username = \"keygate\"\nredis_password = \"data-secret\"\n\
             min_replicas_ack = 1\nreplica_ack_timeout = \"250ms\"\n",
        ))
        .unwrap();
    let ClusterBackend::Redis(settings) = &ok.cluster.backend else {
        panic!("expected the redis backend");
    };
    let sentinel = settings.sentinel.as_ref().unwrap();
    assert_eq!(sentinel.master, "kg");
    assert_eq!(
        sentinel.urls,
        ["redis://:pw@10.0.0.1:26379", "redis://10.0.0.2:26379"]
    );
    assert_eq!(settings.username.as_deref(), Some("keygate"));
    assert_eq!(settings.password.as_deref(), Some("data-secret"));
    assert_eq!(settings.min_replicas_ack, 1);
    assert_eq!(settings.replica_ack_timeout, Duration::from_millis(250));
    assert!(settings.tls.is_none());
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("data-secret") && !shown.contains(":pw@"),
        "{shown}"
    );

    // Defaults: no waiting, a 1 s ack timeout.
    let plain = parse(&cluster("redis_url = \"redis://127.0.0.1:6379/0\"\n")).unwrap();
    let ClusterBackend::Redis(plain) = &plain.cluster.backend else {
        panic!("expected the redis backend");
    };
    assert_eq!(plain.min_replicas_ack, 0);
    assert_eq!(plain.replica_ack_timeout, Duration::from_secs(1));
    assert!(plain.sentinel.is_none());

    // The data nodes' password may come from the environment, and it wins.
    let env = |name: &str| (name == REDIS_PASSWORD_ENV).then(|| "from-env".to_owned());
    let text = cluster("redis_url = \"redis://127.0.0.1/\"\nredis_password = \"file\"\n");
    let c = Config::parse(&text, &env).unwrap();
    let ClusterBackend::Redis(s) = &c.cluster.backend else {
        panic!("expected the redis backend");
    };
    assert_eq!(s.password.as_deref(), Some("from-env"));

    // TLS: rediss:// is accepted, with or without a CA file; the CA must parse.
    let ca = TempFile::new("ca.pem", &test_ca_pem());
    let junk = TempFile::new("junk.pem", "not a certificate\n");
    let key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let client_key = TempFile::new("client.key", &key_pem);
    assert!(parse(&cluster("redis_url = \"rediss://redis.internal:6380/\"\n")).is_ok());
    let with_ca = parse(&cluster(&format!(
        "redis_url = \"rediss://127.0.0.1:6380/\"\ntls_ca_file = \"{}\"\n",
        ca.0.display()
    )))
    .unwrap();
    let ClusterBackend::Redis(s) = &with_ca.cluster.backend else {
        panic!("expected the redis backend");
    };
    let tls = s.tls.as_ref().unwrap();
    assert!(tls.root_cert.is_some() && tls.client_tls.is_none());
    let mutual = parse(&cluster(&format!(
        "redis_url = \"rediss://127.0.0.1:6380/\"\ntls_ca_file = \"{ca}\"\n\
             tls_client_cert = \"{ca}\"\ntls_client_key = \"{key}\"\n",
        ca = ca.0.display(),
        key = client_key.0.display()
    )))
    .unwrap();
    let ClusterBackend::Redis(s) = &mutual.cluster.backend else {
        panic!("expected the redis backend");
    };
    assert!(s.tls.as_ref().unwrap().client_tls.is_some());
    let shown = format!("{s:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    // Sentinels over TLS mean TLS to the data nodes too: the CA applies.
    assert!(
            parse(&cluster(&format!(
                "sentinels = [\"rediss://10.0.0.1:26379\"]\nsentinel_master = \"kg\"\ntls_ca_file = \"{}\"\n",
                ca.0.display()
            )))
            .is_ok()
        );

    let ca_path = ca.0.display().to_string();
    let junk_path = junk.0.display().to_string();
    let key_path = client_key.0.display().to_string();
    let cases: Vec<(String, &str)> = vec![
        (
            cluster(
                "redis_url = \"redis://a/\"\nsentinels = [\"redis://b\"]\nsentinel_master = \"m\"\n",
            ),
            "cluster.sentinels",
        ),
        (cluster("sentinel_master = \"m\"\n"), "cluster.redis_url"),
        (
            cluster("sentinels = []\nsentinel_master = \"m\"\n"),
            "cluster.sentinels",
        ),
        (
            cluster("sentinels = [\"redis://b\"]\n"),
            "cluster.sentinel_master",
        ),
        (
            cluster("redis_url = \"redis://a/\"\nsentinel_master = \"m\"\n"),
            "cluster.sentinel_master",
        ),
        (
            cluster("sentinels = [\"redis://b\"]\nsentinel_master = \"has space\"\n"),
            "cluster.sentinel_master",
        ),
        (
            cluster("sentinels = [\"redis://a\", \"http://b\"]\nsentinel_master = \"m\"\n"),
            "cluster.sentinels[1]",
        ),
        (
            cluster("sentinels = [\"redis://a\", \"not a url\"]\nsentinel_master = \"m\"\n"),
            "cluster.sentinels[1]",
        ),
        (
            cluster("sentinels = [\"redis://a\", \"rediss://b\"]\nsentinel_master = \"m\"\n"),
            "cluster.sentinels[1]",
        ),
        (
            cluster(&format!(
                "redis_url = \"redis://a/\"\ntls_ca_file = \"{ca_path}\"\n"
            )),
            "cluster.tls_ca_file",
        ),
        (
            cluster("redis_url = \"rediss://a/\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n"),
            "cluster.tls_ca_file",
        ),
        (
            cluster(&format!(
                "redis_url = \"rediss://a/\"\ntls_ca_file = \"{junk_path}\"\n"
            )),
            "cluster.tls_ca_file",
        ),
        (
            cluster(&format!(
                "redis_url = \"rediss://a/\"\ntls_client_cert = \"{ca_path}\"\n"
            )),
            "cluster.tls_client_key",
        ),
        (
            cluster(&format!(
                "redis_url = \"rediss://a/\"\ntls_client_key = \"{key_path}\"\n"
            )),
            "cluster.tls_client_cert",
        ),
        (
            cluster(&format!(
                "redis_url = \"rediss://a/\"\ntls_client_cert = \"{ca_path}\"\ntls_client_key = \"{ca_path}\"\n"
            )),
            "cluster.tls_client_key",
        ),
        (
            cluster("redis_url = \"redis://a/\"\nmin_replicas_ack = 65\n"),
            "cluster.min_replicas_ack",
        ),
        (
            cluster("redis_url = \"redis://a/\"\nreplica_ack_timeout = \"0s\"\n"),
            "cluster.replica_ack_timeout",
        ),
        (
            cluster("redis_url = \"redis://a/\"\nredis_password = \"\"\n"),
            "cluster.redis_password",
        ),
        (
            cluster("redis_url = \"redis://a/\"\nredis_username = \"\"\n"),
            "cluster.redis_username",
        ),
        (
            format!("{MINIMAL}\n[cluster]\nsentinels = [\"redis://a\"]\n"),
            "cluster.sentinels",
        ),
        (
            format!("{MINIMAL}\n[cluster]\nmin_replicas_ack = 1\n"),
            "cluster.min_replicas_ack",
        ),
        (
            format!("{MINIMAL}\n[cluster]\ntls_ca_file = \"{ca_path}\"\n"),
            "cluster.tls_ca_file",
        ),
    ];
    for (text, field) in &cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key, *field, "{e}\n{text}");
        assert!(!e.problem.contains("PRIVATE KEY"), "{e}");
    }
}

#[test]
fn errors_found_while_parsing_name_the_key_path() {
    let second = "[[providers]]\ntenant = \"t\"\nname = \"q\"\nissuer = \"https://j.example/\"\naudiences = \"api\"\n";
    let cases: &[(String, &str)] = &[
        // Top level.
        ("providers = 5\n".to_owned(), "providers"),
        // Nested.
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = 8081\n".to_owned(),
            "server.admin_listen",
        ),
        (format!("{MINIMAL}\nleeway = true\n"), "providers[0].leeway"),
        // Inside an array of tables.
        (format!("{MINIMAL}\n{second}"), "providers[1].audiences"),
        (
            format!("{MINIMAL}\n[[admin.keys]]\nid = 7\nscopes = [\"status:read\"]\n"),
            "admin.keys[0].id",
        ),
        (
            format!("{MINIMAL}\n[cluster]\nsentinels = [\"redis://a\", 5]\n"),
            "cluster.sentinels[1]",
        ),
    ];
    for (text, key) in cases {
        let err = parse(text).expect_err(text);
        assert_eq!(err.key, *key, "{text}: {err}");
        assert!(err.problem.contains("line "), "{text}: {err}");
    }
    // An unknown key is named by its table and spelled out in the problem.
    let err = parse("[server]\nlisn = \"127.0.0.1:1\"").unwrap_err();
    assert_eq!(err.key, "server.lisn", "{err}");
    assert!(err.problem.contains("lisn"), "{err}");
}

#[test]
fn claims_to_headers_refuses_headers_keygate_controls() {
    let refused = [
        "Cache-Control",
        "Pragma",
        "Expires",
        "Age",
        "Vary",
        "ETag",
        "Last-Modified",
        "Transfer-Encoding",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Content-Range",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Upgrade",
        "TE",
        "Trailer",
        "Host",
        "Location",
        "Set-Cookie",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Date",
        "Retry-After",
        "Server",
        "Alt-Svc",
        "Strict-Transport-Security",
        "X-Auth-Subject",
        "X-Auth-Reason",
        "x-keygate-tenant",
    ];
    for header in refused {
        let text = format!("{MINIMAL}\n[providers.claims_to_headers]\nclaim = \"{header}\"\n");
        let err = parse(&text).expect_err(header);
        assert_eq!(err.key, "providers[0].claims_to_headers.claim", "{err}");
        assert!(err.problem.contains(header), "{err}");
    }
    // The tenant header is refused under whatever name it is configured.
    let text = format!(
        "[server]\ntenant_header = \"x-tenant\"\n{MINIMAL}\n[providers.claims_to_headers]\nt = \"X-Tenant\"\n"
    );
    assert_eq!(
        parse(&text).unwrap_err().key,
        "providers[0].claims_to_headers.t"
    );
    let ok = parse(&format!(
        "{MINIMAL}\n[providers.claims_to_headers]\nemail = \"X-User-Email\"\n"
    ))
    .unwrap();
    assert_eq!(ok.providers[0].claims_to_headers[0].1, "x-user-email");
}

#[test]
fn key_ids_that_share_an_environment_variable_are_refused() {
    let hash = crate::apikey::hash_secret_with_iterations(b"kg_x", 10_000).unwrap();
    let text = format!(
        "{MINIMAL}\n[[admin.keys]]\nid = \"a-b\"\nhash = \"{hash}\"\nscopes = [\"status:read\"]\n\
             [[admin.keys]]\nid = \"a_b\"\nhash = \"{hash}\"\nscopes = [\"status:read\"]\n"
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key, "admin.keys[1].id", "{err}");
    assert!(
        err.problem.contains("\"a-b\"")
            && err.problem.contains("\"a_b\"")
            && err.problem.contains("KEYGATE_ADMIN_KEY_A_B_HASH"),
        "{err}"
    );
    let secret = "0123456789abcdef0123456789abcdef";
    let text = format!(
        "{MINIMAL}\n[cluster]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1/\"\n\
             [[cluster.keys]]\nid = \"k.1\"\nsecret = \"{secret}\"\n\
             [[cluster.keys]]\nid = \"k-1\"\nsecret = \"{secret}\"\n"
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key, "cluster.keys[1].id", "{err}");
    assert!(
        err.problem.contains("\"k.1\"") && err.problem.contains("KEYGATE_CLUSTER_KEY_K_1_SECRET"),
        "{err}"
    );
}

/// The keys serde accepts in a table, read from its refusal of an unknown key: the
/// `File*` types are the one list, so a key added there cannot be forgotten here.
fn keys_of(table: &str) -> Vec<String> {
    let err = parse(&format!("{table}\nno_such_key_here = 1\n")).unwrap_err();
    let (_, expected) = err
        .problem
        .split_once("expected one of ")
        .or_else(|| err.problem.split_once("expected "))
        .unwrap_or_else(|| panic!("{table}: {err}"));
    let keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!keys.is_empty(), "{table}: {err}");
    keys
}

#[test]
fn the_example_documents_every_key() {
    let example = include_str!("../../../../examples/keygate.toml");
    // `key =`, commented or not, or a table header naming it.
    let documented = |key: &str| {
        example.lines().any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || (line.starts_with('[')
                    && line
                        .trim_matches(|c| c == '[' || c == ']')
                        .split('.')
                        .any(|part| part == key))
        })
    };
    let tables = [
        "",
        "[server]",
        "[[providers]]",
        "[providers.claims_to_headers]",
        "[admin]",
        "[[admin.keys]]",
        "[revocations]",
        "[dev_issuer]",
        "[cluster]",
        "[[cluster.keys]]",
    ];
    let mut missing = Vec::new();
    for table in tables {
        if table == "[providers.claims_to_headers]" {
            continue; // free-form: claim = header
        }
        for key in keys_of(table) {
            if !documented(&key) {
                missing.push(format!("{table} {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "examples/keygate.toml does not document: {missing:?}"
    );
}

#[test]
fn embedded_default_has_the_dev_issuer_and_no_other_provider() {
    let c = Config::embedded_default();
    let dev = c.dev_issuer.unwrap();
    assert_eq!(dev.listen, DEFAULT_DEV_ISSUER_LISTEN.parse().unwrap());
    assert_eq!(dev.audience, DEV_AUDIENCE);
    assert!(c.providers.is_empty());
}
