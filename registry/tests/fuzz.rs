//! Fuzzing what a registry (or a Secret) hands the controller, on stable Rust (proptest): the
//! `WWW-Authenticate` challenge of any server the mirror check reaches, and the docker config JSON
//! of a pull secret. Budget: `PROPTEST_CASES` (proptest's 256 in `make test`, more in `make fuzz`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_registry::{Challenge, parse_challenge, parse_docker_config};
use proptest::option;
use proptest::prelude::*;

/// A quoted-string value as RFC 9110 writes it: `"` and `\` escaped.
fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

proptest! {
    /// Any header is a challenge or not; never a panic.
    #[test]
    fn fuzz_any_challenge_parses_or_is_refused(header in any::<String>()) {
        if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(&header) {
            prop_assert!(!realm.is_empty());
        }
    }

    /// A Bearer challenge with any quoted values (commas, quotes, backslashes, any order, any
    /// case of the scheme) gives back exactly those values.
    #[test]
    fn fuzz_bearer_challenges_give_back_their_values(
        scheme in prop_oneof![Just("Bearer"), Just("bearer"), Just("BEARER")],
        realm in any::<String>().prop_filter("a realm", |r| !r.is_empty()),
        service in option::of(any::<String>()),
        scope in option::of(any::<String>()),
        order in 0..3usize,
        spacing in prop_oneof![Just(","), Just(", "), Just(" , ")],
    ) {
        let mut params = vec![format!("realm={}", quoted(&realm))];
        if let Some(s) = &service {
            params.push(format!("service={}", quoted(s)));
        }
        if let Some(s) = &scope {
            params.push(format!("scope={}", quoted(s)));
        }
        let n = params.len();
        params.rotate_left(order % n);
        let header = format!("{scheme} {}", params.join(spacing));
        prop_assert_eq!(parse_challenge(&header), Some(Challenge::Bearer { realm, service, scope }));
    }

    /// Any text as a pull secret's docker config: credentials or an error message, never a panic,
    /// and the error never repeats the text (it may hold a password).
    #[test]
    fn fuzz_any_docker_config_parses_or_is_refused(
        json in prop_oneof![
            any::<String>(),
            ("[a-z.]{1,10}", any::<String>(), any::<String>()).prop_map(|(h, u, p)| format!(
                r#"{{"auths": {{"{h}": {{"username": {}, "password": {}}}}}}}"#,
                serde_json::Value::String(u), serde_json::Value::String(p))),
            ("[a-z.]{1,10}", any::<String>()).prop_map(|(h, a)| format!(
                r#"{{"auths": {{"{h}": {{"auth": {}}}}}}}"#, serde_json::Value::String(a))),
        ],
    ) {
        if let Err(e) = parse_docker_config(&json)
            && json.len() >= 12
        {
            prop_assert!(!e.contains(&json), "the error repeats the secret: {e}");
        }
    }
}
