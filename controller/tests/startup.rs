//! Flags the controller cannot work with stop it at startup with a message naming the flag, before
//! it connects to anything; they never reach the code that would panic on them later.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// Runs the controller binary with the required flags and `env`; returns (success, stderr).
fn start_with(env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_auto-agent-controller"))
        .env_clear()
        .env("AUTO_AGENT_GRPC_ADVERTISE", "127.0.0.1:9443")
        .env(
            "AUTO_AGENT_SENSOR_SERVICE_ACCOUNT",
            "auto-agent/auto-agent-sensor",
        )
        .env("AUTO_AGENT_INSECURE_PLAINTEXT", "true")
        // Nowhere to connect to: a start that got past the flags would fail on this instead.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_huge_lease_is_a_startup_error_not_a_panic() {
    for (var, value, says) in [
        (
            "AUTO_AGENT_LEASE_SECONDS",
            "18446744073709551615",
            "--lease-seconds (AUTO_AGENT_LEASE_SECONDS) is 18446744073709551615",
        ),
        (
            "AUTO_AGENT_FENCE_MARGIN_SECONDS",
            "18446744073709551615",
            "--fence-margin-seconds (AUTO_AGENT_FENCE_MARGIN_SECONDS)",
        ),
        (
            "AUTO_AGENT_RENEW_SECONDS",
            "15",
            "--lease-seconds (15) must be greater than --renew-seconds (15)",
        ),
    ] {
        let (ok, stderr) = start_with(&[(var, value)]);
        assert!(!ok, "{var}={value} must stop the controller");
        assert!(stderr.contains(says), "{var}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{var}={value}: {stderr}");
    }
}
