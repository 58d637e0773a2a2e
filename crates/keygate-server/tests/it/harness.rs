//! Running the `keygate` binary and checking its output contract.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use keygate_test_support::{TestKey, TokenBuilder, jwks, typical_claims};
use serde_json::{Map, Value};

/// The instant every token here is minted for; `--now` defaults to it.
pub(crate) const NOW: i64 = 1_700_000_000;
pub(crate) const ISS: &str = "https://issuer.test";
pub(crate) const AUD: &str = "keygate-it";

/// The ES256 key that signs the tests' tokens.
pub(crate) fn es256_key() -> &'static TestKey {
    TestKey::shared_p256("it-es256")
}

/// The RSA key that is also in the key set, so `--alg RS256` leaves a usable key.
pub(crate) fn rsa_key() -> &'static TestKey {
    TestKey::shared_rsa("it-rsa")
}

/// The key set holding both keys.
pub(crate) fn key_set() -> Value {
    jwks(&[es256_key(), rsa_key()])
}

/// Typical claims valid at [`NOW`] (they expire at `NOW + 3600`).
pub(crate) fn claims() -> Map<String, Value> {
    typical_claims(ISS, AUD, NOW)
}

/// A valid ES256 token with [`claims`].
pub(crate) fn token() -> (String, Map<String, Value>) {
    let claims = claims();
    let token = TokenBuilder::new(es256_key()).claims(claims.clone()).sign();
    (token, claims)
}

/// Writes `contents` to a fresh file under the target's scratch directory.
pub(crate) fn temp_file(name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("keygate-it-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The key set written to a file.
pub(crate) fn jwks_file() -> PathBuf {
    temp_file("jwks.json", key_set().to_string())
}

/// What the binary did.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// The single line on stdout, without its newline.
    pub(crate) fn line(&self) -> &str {
        let line = self
            .stdout
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("stdout does not end in a newline: {self:?}"));
        assert!(!line.contains('\n'), "more than one line: {self:?}");
        line
    }

    /// The line on stdout, parsed.
    pub(crate) fn verdict(&self) -> Map<String, Value> {
        match serde_json::from_str(self.line()) {
            Ok(Value::Object(verdict)) => verdict,
            other => panic!("not a JSON object ({other:?}): {self:?}"),
        }
    }
}

/// Runs `keygate ARGS`, feeding `stdin` if given.
pub(crate) fn keygate<S: AsRef<std::ffi::OsStr>>(args: &[S], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// How the token reaches the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    File,
    Stdin,
    Inline,
}

/// One `keygate verify` invocation: the token, how it is passed, and the other arguments.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    token: Vec<u8>,
    via: Via,
    jwks: String,
    iss: String,
    aud: String,
    now: i64,
    extra: Vec<String>,
}

impl Spec {
    /// `token` passed in a file, checked against [`key_set`] for [`ISS`] and [`AUD`] at
    /// [`NOW`].
    pub(crate) fn new(token: impl Into<Vec<u8>>) -> Self {
        Spec {
            token: token.into(),
            via: Via::File,
            jwks: jwks_file().to_str().unwrap().to_owned(),
            iss: ISS.into(),
            aud: AUD.into(),
            now: NOW,
            extra: Vec::new(),
        }
    }

    pub(crate) fn via(mut self, via: Via) -> Self {
        self.via = via;
        self
    }

    pub(crate) fn jwks(mut self, jwks: impl Into<String>) -> Self {
        self.jwks = jwks.into();
        self
    }

    pub(crate) fn iss(mut self, iss: &str) -> Self {
        self.iss = iss.into();
        self
    }

    pub(crate) fn aud(mut self, aud: &str) -> Self {
        self.aud = aud.into();
        self
    }

    /// Sets `--now` (default [`NOW`]).
    pub(crate) fn now(mut self, now: i64) -> Self {
        self.now = now;
        self
    }

    /// Adds `--name value`.
    pub(crate) fn arg(mut self, name: &str, value: impl ToString) -> Self {
        self.extra.push(name.into());
        self.extra.push(value.to_string());
        self
    }

    pub(crate) fn run(&self) -> Output {
        let mut args: Vec<String> = vec!["verify".into(), "--jwks".into(), self.jwks.clone()];
        let mut stdin = None;
        match self.via {
            Via::File => {
                let path = temp_file("token.jwt", &self.token);
                args.extend(["--token-file".into(), path.to_str().unwrap().into()]);
            }
            Via::Stdin => {
                args.extend(["--token-file".into(), "-".into()]);
                stdin = Some(self.token.as_slice());
            }
            Via::Inline => {
                let token = String::from_utf8(self.token.clone()).unwrap();
                args.extend(["--token".into(), token]);
            }
        }
        args.extend([
            "--iss".into(),
            self.iss.clone(),
            "--aud".into(),
            self.aud.clone(),
        ]);
        args.extend(["--now".into(), self.now.to_string()]);
        args.extend(self.extra.iter().cloned());
        keygate(&args, stdin)
    }
}

/// What a run should end in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expected {
    /// Exit 0 with exactly these claims.
    Valid(Map<String, Value>),
    /// Exit 1 with this `error_class`.
    Invalid(&'static str),
}

/// Runs `spec` and checks the outcome, the output contract, and that the token appears
/// nowhere in the output.
pub(crate) fn check(spec: &Spec, expected: &Expected) -> Output {
    let out = spec.run();
    let verdict = out.verdict();
    // The whole line is compared, so the member order and the compact form are checked too.
    // The tokens' claims were serialised by the same `serde_json`, hence in the same order.
    match expected {
        Expected::Valid(claims) => {
            assert_eq!(out.code, 0, "{out:?}");
            let claims = Value::Object(claims.clone());
            let want = format!(r#"{{"valid":true,"error_class":null,"claims":{claims}}}"#);
            assert_eq!(out.line(), want);
        }
        Expected::Invalid(class) => {
            assert_eq!(out.code, 1, "{out:?}");
            let detail = verdict["detail"].as_str().expect("detail is a string");
            assert!(!detail.is_empty());
            let want = format!(
                r#"{{"valid":false,"error_class":"{class}","detail":{}}}"#,
                Value::from(detail)
            );
            assert_eq!(out.line(), want);
        }
    }
    assert!(out.stderr.is_empty(), "{out:?}");
    let token = String::from_utf8_lossy(&spec.token);
    for segment in token.trim().split('.').filter(|s| s.len() > 8) {
        assert!(!out.stdout.contains(segment), "token echoed: {out:?}");
    }
    out
}

/// `keygate verify --jwks <jwks> --token <token> --iss ISS --aud AUD`, then `extra`.
pub(crate) fn verify(jwks: &str, token: &str, extra: &[&str]) -> Output {
    keygate(
        &[
            &[
                "verify", "--jwks", jwks, "--token", token, "--iss", ISS, "--aud", AUD,
            ],
            extra,
        ]
        .concat(),
        None,
    )
}

/// `keygate serve --check` of a config file holding `text`.
pub(crate) fn serve_check(text: &str) -> Output {
    let path = temp_file("keygate.toml", text);
    keygate(
        &["serve", "--check", "--config", path.to_str().unwrap()],
        None,
    )
}
