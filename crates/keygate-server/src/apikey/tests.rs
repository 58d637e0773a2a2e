use base64_simd::URL_SAFE_NO_PAD;

use super::*;

/// The smallest accepted cost keeps the tests quick; the code path is the same.
fn quick_hash(secret: &str) -> KeyHash {
    hash_secret_with_iterations(secret.as_bytes(), MIN_ITERATIONS).unwrap()
}

fn key(id: &str, secret: &str, scopes: &[Scope]) -> ApiKey {
    ApiKey {
        id: id.into(),
        hash: quick_hash(secret),
        scopes: scopes.to_vec(),
    }
}

fn checks(ring: &KeyRing) -> u64 {
    ring.inner.pbkdf2_checks.load(Ordering::Relaxed)
}

#[test]
fn hash_round_trips_through_its_string_and_verifies() {
    let secret = generate_secret();
    let hash = hash_secret(secret.as_bytes());
    assert_eq!(hash.iterations(), DEFAULT_ITERATIONS);
    let text = hash.to_string();
    assert!(text.starts_with("$pbkdf2-sha256$i=100000$"), "{text}");
    let parsed: KeyHash = text.parse().unwrap();
    assert_eq!(parsed, hash);
    assert_eq!(parsed.to_string(), text);
    assert!(parsed.verify(secret.as_bytes()));
}

#[test]
fn wrong_secret_does_not_verify() {
    let hash = quick_hash("kg_right");
    assert!(hash.verify(b"kg_right"));
    assert!(!hash.verify(b"kg_wrong"));
    assert!(!hash.verify(b""));
    assert!(!hash.verify(b"kg_right\n"));
}

#[test]
fn salts_differ_between_hashes_of_one_secret() {
    assert_ne!(
        quick_hash("same").to_string(),
        quick_hash("same").to_string()
    );
}

#[test]
fn iteration_count_outside_the_range_is_refused_when_hashing() {
    for n in [0, MIN_ITERATIONS - 1, MAX_ITERATIONS + 1] {
        assert_eq!(
            hash_secret_with_iterations(b"x", n),
            Err(BadKeyHash::Iterations)
        );
    }
}

#[test]
fn malformed_hash_strings_are_refused_with_the_reason() {
    let salt = URL_SAFE_NO_PAD.encode_to_string([7u8; 16]);
    let key = URL_SAFE_NO_PAD.encode_to_string([9u8; 32]);
    let good = format!("$pbkdf2-sha256$i=10000${salt}${key}");
    assert!(good.parse::<KeyHash>().is_ok());
    let short_salt = URL_SAFE_NO_PAD.encode_to_string([7u8; 15]);
    let long_salt = URL_SAFE_NO_PAD.encode_to_string([7u8; 65]);
    let short_key = URL_SAFE_NO_PAD.encode_to_string([9u8; 31]);
    let long_key = URL_SAFE_NO_PAD.encode_to_string([9u8; 33]);
    let cases = [
        (String::new(), BadKeyHash::Algorithm),
        (
            format!("$pbkdf2-sha512$i=10000${salt}${key}"),
            BadKeyHash::Algorithm,
        ),
        (
            format!("$argon2id$v=19${salt}${key}"),
            BadKeyHash::Algorithm,
        ),
        (format!(" {good}"), BadKeyHash::Algorithm),
        ("$pbkdf2-sha256$i=10000".to_owned(), BadKeyHash::Fields),
        (format!("$pbkdf2-sha256$i=10000${salt}"), BadKeyHash::Fields),
        (format!("{good}$extra"), BadKeyHash::Fields),
        (
            format!("$pbkdf2-sha256$10000${salt}${key}"),
            BadKeyHash::Iterations,
        ),
        (
            format!("$pbkdf2-sha256$i=${salt}${key}"),
            BadKeyHash::Iterations,
        ),
        (
            format!("$pbkdf2-sha256$i=+10000${salt}${key}"),
            BadKeyHash::Iterations,
        ),
        (
            format!("$pbkdf2-sha256$i=9999${salt}${key}"),
            BadKeyHash::Iterations,
        ),
        (
            format!("$pbkdf2-sha256$i=10000001${salt}${key}"),
            BadKeyHash::Iterations,
        ),
        (
            format!("$pbkdf2-sha256$i=99999999999${salt}${key}"),
            BadKeyHash::Iterations,
        ),
        (
            format!("$pbkdf2-sha256$i=10000${short_salt}${key}"),
            BadKeyHash::Salt,
        ),
        (
            format!("$pbkdf2-sha256$i=10000${long_salt}${key}"),
            BadKeyHash::Salt,
        ),
        (format!("$pbkdf2-sha256$i=10000$${key}"), BadKeyHash::Salt),
        (
            format!("$pbkdf2-sha256$i=10000${salt}=${key}"),
            BadKeyHash::Salt,
        ),
        (
            format!("$pbkdf2-sha256$i=10000$a+b/cdefghijklmnopqrstu${key}"),
            BadKeyHash::Salt,
        ),
        (
            format!("$pbkdf2-sha256$i=10000${salt}${short_key}"),
            BadKeyHash::DerivedKey,
        ),
        (
            format!("$pbkdf2-sha256$i=10000${salt}${long_key}"),
            BadKeyHash::DerivedKey,
        ),
        (
            format!("$pbkdf2-sha256$i=10000${salt}$"),
            BadKeyHash::DerivedKey,
        ),
        (format!("{good}\n"), BadKeyHash::DerivedKey),
    ];
    for (text, want) in cases {
        assert_eq!(text.parse::<KeyHash>(), Err(want.clone()), "{text:?}");
    }
}

#[test]
fn hash_errors_describe_the_shape_and_echo_nothing() {
    let secret_looking = "$pbkdf2-sha256$i=10000$c2VjcmV0c2FsdHNhbHRzYWx0$tooshort";
    let err = secret_looking.parse::<KeyHash>().unwrap_err();
    let message = err.to_string();
    assert!(message.contains("$pbkdf2-sha256$i=<iterations>$<salt>$<derived key>"));
    assert!(!message.contains("c2VjcmV0"), "{message}");
    assert!(!message.contains("tooshort"), "{message}");
}

#[test]
fn debug_of_a_hash_and_a_key_shows_no_key_material() {
    let key = key("ops", "kg_secret", &[Scope::StatusRead]);
    let text = key.hash.to_string();
    let salt = text.split('$').nth(3).unwrap().to_owned();
    let debug = format!(
        "{key:?} {:?} {:?}",
        key.hash,
        KeyRing::new(vec![key.clone()])
    );
    assert!(
        debug.contains("ops") && debug.contains("StatusRead"),
        "{debug}"
    );
    assert!(!debug.contains(&salt), "{debug}");
    assert!(!debug.contains("pbkdf2"), "{debug}");
}

#[test]
fn generated_secrets_are_prefixed_random_and_43_characters_of_base64url() {
    let a = generate_secret();
    let b = generate_secret();
    assert_ne!(a, b);
    let body = a.strip_prefix("kg_").unwrap();
    assert_eq!(body.len(), 43);
    assert_eq!(URL_SAFE_NO_PAD.decode_to_vec(body).unwrap().len(), 32);
}

#[test]
fn scopes_parse_from_and_display_as_their_names() {
    for scope in Scope::ALL {
        assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        assert_eq!(scope.to_string(), scope.as_str());
    }
    assert_eq!(
        Scope::ALL.map(Scope::as_str),
        [
            "jwks:flush",
            "jwks:refresh",
            "tokens:revoke",
            "status:read",
            "events:publish",
            "events:read"
        ]
    );
    for bad in ["", "JWKS:FLUSH", "jwks:*", "jwks:flush ", "admin", "events"] {
        let err = bad.parse::<Scope>().unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(
                "jwks:flush, jwks:refresh, tokens:revoke, status:read, events:publish, \
                     events:read"
            ),
            "{message}"
        );
    }
}

#[test]
fn keys_allow_only_their_scopes() {
    let key = key("reader", "s", &[Scope::StatusRead]);
    assert!(key.allows(Scope::StatusRead));
    assert!(!key.allows(Scope::JwksFlush));
}

#[tokio::test]
async fn ring_finds_the_key_then_answers_from_memory() {
    let ring = KeyRing::new(vec![key("ops", "kg_ops-secret", &Scope::ALL)]);
    assert_eq!(ring.len(), 1);
    assert!(!ring.is_empty());
    let found = ring.authenticate("kg_ops-secret").await.unwrap();
    assert_eq!(found.id, "ops");
    assert_eq!(checks(&ring), 1);
    let again = ring.clone().authenticate("kg_ops-secret").await.unwrap();
    assert!(Arc::ptr_eq(&found, &again));
    assert_eq!(checks(&ring), 1, "a known secret must not run PBKDF2 again");
}

#[tokio::test]
async fn ring_refuses_wrong_secrets_and_remembers_them() {
    let ring = KeyRing::new(vec![key("ops", "kg_ops-secret", &Scope::ALL)]);
    assert!(ring.authenticate("kg_wrong").await.is_none());
    assert_eq!(checks(&ring), 1);
    assert!(ring.authenticate("kg_wrong").await.is_none());
    assert_eq!(
        checks(&ring),
        1,
        "a refused secret must not run PBKDF2 again"
    );
    assert!(ring.authenticate("kg_other-wrong").await.is_none());
    assert_eq!(checks(&ring), 2);
    // A refusal does not poison the right secret.
    assert!(ring.authenticate("kg_ops-secret").await.is_some());
}

#[tokio::test]
async fn ring_refuses_empty_and_oversized_secrets_without_hashing() {
    let long = "k".repeat(MAX_SECRET_BYTES + 1);
    let ring = KeyRing::new(vec![key("ops", &long, &Scope::ALL)]);
    assert!(ring.authenticate("").await.is_none());
    assert!(ring.authenticate(&long).await.is_none());
    assert_eq!(checks(&ring), 0);
    let empty = KeyRing::new(Vec::new());
    assert!(empty.is_empty());
    assert!(empty.authenticate("kg_anything").await.is_none());
    assert_eq!(checks(&empty), 0);
}

#[tokio::test]
async fn ring_tells_two_keys_and_their_scopes_apart() {
    let ring = KeyRing::new(vec![
        key(
            "flusher",
            "kg_flush",
            &[Scope::JwksFlush, Scope::JwksRefresh],
        ),
        key("reader", "kg_read", &[Scope::StatusRead]),
    ]);
    let flusher = ring.authenticate("kg_flush").await.unwrap();
    let reader = ring.authenticate("kg_read").await.unwrap();
    assert_eq!(flusher.id, "flusher");
    assert_eq!(reader.id, "reader");
    assert!(flusher.allows(Scope::JwksFlush) && !flusher.allows(Scope::StatusRead));
    assert!(reader.allows(Scope::StatusRead) && !reader.allows(Scope::JwksFlush));
    assert_eq!(checks(&ring), 2);
    assert_eq!(ring.authenticate("kg_read").await.unwrap().id, "reader");
    assert_eq!(checks(&ring), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_secret_run_pbkdf2_once() {
    let ring = KeyRing::new(vec![key("ops", "kg_ops-secret", &Scope::ALL)]);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ring = ring.clone();
            tokio::spawn(async move { ring.authenticate("kg_nope").await.is_none() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(checks(&ring), 1);
}

fn limited(keys: Vec<ApiKey>, max_failures: u32) -> KeyRing {
    let limit = FailureLimit::new(max_failures, Duration::from_secs(600)).unwrap();
    KeyRing::with_failure_limit(keys, limit)
}

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 66));
const OPERATOR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));

#[tokio::test]
async fn a_locked_out_address_is_refused_even_the_right_key_and_hashes_nothing() {
    let ring = limited(vec![key("ops", "kg_ops-secret", &Scope::ALL)], 3);
    for (n, locks) in [(1, false), (2, false), (3, true)] {
        assert_eq!(
            ring.authenticate_from(ATTACKER, &format!("kg_guess-{n}"))
                .await
                .unwrap_err(),
            Denied::UnknownKey { locked_out: locks }
        );
    }
    assert_eq!(checks(&ring), 3);
    for secret in ["kg_ops-secret", "kg_guess-4", "", &"x".repeat(2000)] {
        let denied = ring.authenticate_from(ATTACKER, secret).await.unwrap_err();
        assert!(
            matches!(denied, Denied::TooManyFailures { retry_after } if retry_after > Duration::from_secs(590)),
            "{denied:?}"
        );
    }
    assert_eq!(
        checks(&ring),
        3,
        "nothing is hashed for a locked-out address"
    );
    assert!(ring.lockout(ATTACKER).is_some());
    // Another address is not affected, and the right key still works from it.
    assert!(ring.lockout(OPERATOR).is_none());
    let key = ring
        .authenticate_from(OPERATOR, "kg_ops-secret")
        .await
        .unwrap();
    assert_eq!(key.id, "ops");
}

#[tokio::test]
async fn a_success_does_not_reset_the_failure_count() {
    let ring = limited(vec![key("ops", "kg_ops-secret", &Scope::ALL)], 3);
    for (secret, ok) in [
        ("kg_ops-secret", true),
        ("kg_guess-1", false),
        ("kg_ops-secret", true),
        ("kg_guess-2", false),
        ("kg_ops-secret", true),
        ("kg_guess-1", false),
    ] {
        assert_eq!(ring.authenticate_from(ATTACKER, secret).await.is_ok(), ok);
    }
    assert!(ring.lockout(ATTACKER).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_from_one_address_stop_at_the_limit() {
    let ring = limited(vec![key("ops", "kg_ops-secret", &Scope::ALL)], 3);
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let ring = ring.clone();
            tokio::spawn(async move {
                ring.authenticate_from(ATTACKER, &format!("kg_guess-{n}"))
                    .await
                    .unwrap_err()
            })
        })
        .collect();
    let mut unknown = 0;
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap() {
            Denied::UnknownKey { .. } => unknown += 1,
            Denied::TooManyFailures { .. } => limited += 1,
        }
    }
    assert_eq!((unknown, limited), (3, 5));
    assert_eq!(
        checks(&ring),
        3,
        "PBKDF2 ran only for the guesses before the lockout"
    );
}

#[test]
fn the_refused_cache_is_bounded() {
    let ring = KeyRing::new(vec![key("ops", "kg_ops-secret", &Scope::ALL)]);
    for n in 0..=REFUSED_CAPACITY {
        ring.inner
            .remember(fingerprint(n.to_string().as_bytes()), None);
    }
    assert_eq!(lock(&ring.inner.refused).len(), 1);
    for n in 0..10 {
        ring.inner
            .remember(fingerprint(n.to_string().as_bytes()), Some(0));
    }
    assert_eq!(lock(&ring.inner.known).len(), 1);
}

/// The lockout runs on tokio's clock: with it paused, the window passes without waiting.
#[tokio::test(start_paused = true)]
async fn a_lockout_ends_when_its_window_has_passed_on_the_paused_clock() {
    let ring = limited(vec![key("ops", "kg_ops-secret", &Scope::ALL)], 3);
    for n in 1..=3 {
        let _ = ring
            .authenticate_from(ATTACKER, &format!("kg_guess-{n}"))
            .await;
    }
    assert!(ring.lockout(ATTACKER).is_some());
    tokio::time::advance(Duration::from_secs(601)).await;
    assert!(ring.lockout(ATTACKER).is_none());
    let after = ring.authenticate_from(ATTACKER, "kg_ops-secret").await;
    assert_eq!(after.map(|key| key.id.clone()), Ok("ops".to_owned()));
}
