//! Unit tests of the admin listener: request bodies and the OpenAPI document.

use serde_json::Value;

use super::*;

fn field_of(body: &str) -> String {
    match parse_revocation(body.as_bytes()) {
        Err(ApiError::BadRequest { field, .. }) => field,
        other => panic!("{body}: {other:?}"),
    }
}

#[test]
fn revocation_bodies_parse_into_their_shape() {
    assert!(matches!(
        parse_revocation(br#"{"jti":"a","exp":10}"#).unwrap(),
        RevocationRequest::Jti(JtiRevocation { ref jti, exp: 10 }) if jti == "a"
    ));
    assert!(matches!(
        parse_revocation(br#"{"tenant":"t","sub":"s","before":5}"#).unwrap(),
        RevocationRequest::Subject(SubjectRevocation {
            before: 5,
            until: None,
            ..
        })
    ));
    assert!(matches!(
        parse_revocation(br#"{"tenant":"t","provider":"p","kid":"k","until":9}"#).unwrap(),
        RevocationRequest::Kid(KidRevocation { until: Some(9), .. })
    ));
}

#[test]
fn bad_revocation_bodies_name_the_field() {
    let cases = [
        ("not json", "body"),
        ("[1]", "body"),
        ("{}", "body"),
        (r#"{"jti":"a"}"#, "exp"),
        (r#"{"jti":"a","exp":"soon"}"#, "exp"),
        (r#"{"jti":"a","exp":-1}"#, "exp"),
        (r#"{"jti":"a","exp":1.5}"#, "exp"),
        (r#"{"jti":"","exp":1}"#, "jti"),
        (r#"{"jti":7,"exp":1}"#, "jti"),
        (r#"{"jti":"a","exp":1,"tenant":"t"}"#, "tenant"),
        (r#"{"sub":"s","before":1}"#, "tenant"),
        (r#"{"tenant":"t","sub":"s"}"#, "before"),
        (r#"{"tenant":"t","provider":"p"}"#, "body"),
        (r#"{"tenant":"t","kid":"k"}"#, "provider"),
        (r#"{"jti":"a","sub":"s","exp":1}"#, "sub"),
        // A repeated member is refused, not decided by last-one-wins.
        (r#"{"jti":"a","exp":1,"jti":"b"}"#, "jti"),
        (
            r#"{"tenant":"t","sub":"s","before":1,"before":2}"#,
            "before",
        ),
        (r#"{"jti":"a","exp":1} trailing"#, "body"),
        ("\"just a string\"", "body"),
        ("", "body"),
    ];
    for (body, field) in cases {
        assert_eq!(field_of(body), field, "{body}");
    }
    let long = format!(r#"{{"jti":"{}","exp":1}}"#, "x".repeat(MAX_FIELD_BYTES + 1));
    assert_eq!(field_of(&long), "jti");
}

#[test]
fn openapi_document_lists_every_admin_path() {
    let doc: Value = serde_json::from_str(&openapi_document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/admin/v1/status",
        "/admin/v1/providers/{tenant}/{provider}/flush",
        "/admin/v1/providers/{tenant}/{provider}/refresh",
        "/admin/v1/revocations",
        "/admin/v1/events",
        "/admin/v1/events/stream",
    ] {
        assert!(paths.contains_key(p), "{p}");
    }
    assert!(doc["paths"]["/admin/v1/events"]["post"]["requestBody"].is_object());
    assert!(
        doc["paths"]["/admin/v1/events/stream"]["get"]["responses"]["200"]["content"]
            ["text/event-stream"]
            .is_object()
    );
    assert!(doc["paths"]["/admin/v1/revocations"]["post"]["requestBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    // Every route that takes a key documents the lockout.
    let too_many = &doc["paths"]["/admin/v1/status"]["get"]["responses"]["429"];
    assert!(too_many["headers"]["Retry-After"].is_object(), "{too_many}");
    assert!(
        doc["paths"]["/admin/v1/events"]["post"]["responses"]["429"].is_object()
            && doc["paths"]["/admin/v1/providers/{tenant}/{provider}/flush"]["post"]
                ["responses"]["429"]
                .is_object()
    );
    assert!(doc["components"]["schemas"]["RevocationRequest"].is_object());
}

#[test]
fn openapi_document_lists_the_unauthenticated_paths_and_413() {
    let doc: Value = serde_json::from_str(&openapi_document()).unwrap();
    for p in ["/metrics", "/healthz", "/readyz", "/admin/v1/openapi.json"] {
        assert!(
            doc["paths"][p]["get"]["responses"]["200"].is_object(),
            "{p}"
        );
    }
    assert!(doc["paths"]["/readyz"]["get"]["responses"]["503"].is_object());
    for p in ["/admin/v1/revocations", "/admin/v1/events"] {
        let too_large = &doc["paths"][p]["post"]["responses"]["413"];
        assert_eq!(
            too_large["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{p}"
        );
    }
    // Routes without a body do not claim one.
    assert!(doc["paths"]["/admin/v1/status"]["get"]["responses"]["413"].is_null());
}
