//! Where the mirror check may send the controller, against local servers that misbehave the way a
//! hostile or broken mirror named by a tenant's policy would: a redirect to another host, a token
//! service elsewhere, an endless answer, an error page full of internal details. A real registry
//! cannot be made to do these on demand (the e2e mirror tests use Debian's docker-registry for the
//! well-behaved cases).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use auto_agent_engine::decide::image::ImageRef;
use auto_agent_registry::{MAX_BODY_BYTES, MirrorAllowlist, RegistryClient, RegistryError};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

/// What a server saw: requests by path.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    /// 64 KiB chunks the endless token answer produced.
    chunks: Arc<AtomicUsize>,
}

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct Mirror {
    seen: Seen,
    /// Where the hostile answers point: another server on this machine.
    elsewhere: SocketAddr,
    me: SocketAddr,
}

const INTERNAL_DETAIL: &str = "upstream 10.96.0.1:6443 said: internal-secret-token-xyz";

async fn mirror(State(m): State<Mirror>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    m.seen.requests.lock().unwrap().push(path.clone());
    let redirect = |status: StatusCode, to: String| {
        (status, [(header::LOCATION, to)], Body::empty()).into_response()
    };
    let challenge = |realm: String| {
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                format!("Bearer realm=\"{realm}\",service=\"mirror\""),
            )],
            Body::empty(),
        )
            .into_response()
    };
    let elsewhere = m.elsewhere;
    let me = m.me;
    match path.as_str() {
        "/v2/team/app/manifests/1" => StatusCode::OK.into_response(),
        // Another host: answered, never followed.
        "/v2/team/away/manifests/1" => redirect(
            StatusCode::TEMPORARY_REDIRECT,
            format!("http://{elsewhere}/v2/team/app/manifests/1"),
        ),
        // The same origin under another scheme is another origin too.
        "/v2/team/tls/manifests/1" => redirect(
            StatusCode::FOUND,
            format!("https://{me}/v2/team/app/manifests/1"),
        ),
        // The same host: followed.
        "/v2/team/moved/manifests/1" => redirect(
            StatusCode::MOVED_PERMANENTLY,
            "/v2/team/app/manifests/1".to_owned(),
        ),
        "/v2/team/loop/manifests/1" => redirect(StatusCode::FOUND, path.clone()),
        "/v2/team/down/manifests/1" => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("<html>{INTERNAL_DETAIL}</html>"),
        )
            .into_response(),
        "/v2/team/huge/manifests/1" | "/v2/team/declared/manifests/1"
            if headers.contains_key(header::AUTHORIZATION) =>
        {
            StatusCode::OK.into_response()
        }
        "/v2/team/huge/manifests/1" => challenge(format!("http://{me}/token/endless")),
        "/v2/team/declared/manifests/1" => challenge(format!("http://{me}/token/declared")),
        "/v2/team/realm-elsewhere/manifests/1" => challenge(format!("http://{elsewhere}/token")),
        "/token/endless" => {
            let chunks = m.seen.chunks.clone();
            let stream = futures::stream::repeat_with(move || {
                chunks.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])
            })
            .take(4096);
            Body::from_stream(stream).into_response()
        }
        "/token/declared" => (StatusCode::OK, vec![b' '; MAX_BODY_BYTES + 1]).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

use futures::StreamExt as _;

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

struct Servers {
    mirror: SocketAddr,
    mirror_seen: Seen,
    elsewhere: SocketAddr,
    elsewhere_seen: Seen,
}

/// The mirror, and another server ("elsewhere") on another port that answers 200 to anything.
async fn servers() -> Servers {
    let (mirror_listener, mirror_addr) = listener().await;
    let (elsewhere_listener, elsewhere_addr) = listener().await;
    let elsewhere_seen = Seen::default();
    let recorded = elsewhere_seen.clone();
    let elsewhere = Router::new().fallback(any(move |uri: Uri| {
        let recorded = recorded.clone();
        async move {
            recorded
                .requests
                .lock()
                .unwrap()
                .push(uri.path().to_owned());
            (StatusCode::OK, "{\"token\":\"stolen\"}")
        }
    }));
    let mirror_seen = Seen::default();
    let app = Router::new().fallback(any(mirror)).with_state(Mirror {
        seen: mirror_seen.clone(),
        elsewhere: elsewhere_addr,
        me: mirror_addr,
    });
    tokio::spawn(async move { axum::serve(mirror_listener, app).await });
    tokio::spawn(async move { axum::serve(elsewhere_listener, elsewhere).await });
    Servers {
        mirror: mirror_addr,
        mirror_seen,
        elsewhere: elsewhere_addr,
        elsewhere_seen,
    }
}

/// A client for both servers over plain HTTP, allowed to contact `allowed` only.
fn client(s: &Servers, allowed: &[String]) -> RegistryClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    RegistryClient::new(vec![s.mirror.to_string(), s.elsewhere.to_string()], None)
        .unwrap()
        .allowing(MirrorAllowlist::parse(allowed).unwrap())
}

fn image(registry: SocketAddr, repository: &str) -> ImageRef {
    ImageRef {
        registry: registry.to_string(),
        repository: repository.to_owned(),
        reference: ":1".to_owned(),
    }
}

#[tokio::test]
async fn a_mirror_off_the_allowlist_is_never_contacted() {
    let s = servers().await;
    // Nothing allowed (the default), another registry, another prefix of the same one.
    for allowed in [
        vec![],
        vec![s.elsewhere.to_string()],
        vec![format!("{}/other", s.mirror)],
    ] {
        let err = client(&s, &allowed)
            .has_manifest(&image(s.mirror, "team/app"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::NotAllowed { registry } if *registry == s.mirror.to_string()),
            "{allowed:?}: {err:?}"
        );
        assert!(err.to_string().contains("not contacted"), "{err}");
    }
    // A repository that would climb out of an allowed prefix once the URL is normalised.
    let prefixed = client(&s, &[format!("{}/team", s.mirror)]);
    let err = prefixed
        .has_manifest(&image(s.mirror, "team/../admin"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::InvalidReference(_)), "{err:?}");
    let bad_tag = ImageRef {
        reference: ":1/../../x".into(),
        ..image(s.mirror, "team/app")
    };
    assert!(matches!(
        prefixed.has_manifest(&bad_tag).await.unwrap_err(),
        RegistryError::InvalidReference(_)
    ));
    assert!(
        s.mirror_seen.paths().is_empty(),
        "{:?}",
        s.mirror_seen.paths()
    );

    // On the list: checked.
    assert!(
        prefixed
            .has_manifest(&image(s.mirror, "team/app"))
            .await
            .unwrap()
    );
    assert_eq!(s.mirror_seen.paths(), ["/v2/team/app/manifests/1"]);
}

#[tokio::test]
async fn redirects_stay_on_the_mirrors_own_host() {
    let s = servers().await;
    let c = client(&s, &[s.mirror.to_string()]);

    // Same host: followed.
    assert!(
        c.has_manifest(&image(s.mirror, "team/moved"))
            .await
            .unwrap()
    );

    // Another host (here another port on the same address), or another scheme: an answer, not
    // followed, and the error does not repeat where it pointed.
    for (repository, status) in [("team/away", 307), ("team/tls", 302)] {
        let err = c
            .has_manifest(&image(s.mirror, repository))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Redirected(got) if got == status),
            "{repository}: {err:?}"
        );
        let text = err.to_string();
        assert_eq!(
            text,
            format!(
                "the mirror answered {status}, a redirect to another host, which is not followed"
            )
        );
        assert!(!text.contains(&s.elsewhere.to_string()), "{text}");
    }
    assert!(
        s.elsewhere_seen.paths().is_empty(),
        "nothing reached the other host: {:?}",
        s.elsewhere_seen.paths()
    );

    // A redirect loop on the same host ends.
    let err = c
        .has_manifest(&image(s.mirror, "team/loop"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Unreachable("too many redirects")),
        "{err:?}"
    );
    let loops = s
        .mirror_seen
        .paths()
        .iter()
        .filter(|p| p.contains("loop"))
        .count();
    assert!(loops <= auto_agent_registry::MAX_REDIRECTS + 1, "{loops}");
}

#[tokio::test]
async fn errors_name_the_status_not_the_answer() {
    let s = servers().await;
    let c = client(&s, &[s.mirror.to_string()]);
    let err = c
        .has_manifest(&image(s.mirror, "team/down"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "the mirror answered 503");
    assert!(!format!("{err:?}").contains("internal-secret"), "{err:?}");

    // Nothing listening: a generic cause, not the resolver's or the socket's words.
    let closed = {
        let (l, addr) = listener().await;
        drop(l);
        addr
    };
    let c = RegistryClient::new(vec![closed.to_string()], None)
        .unwrap()
        .allowing(MirrorAllowlist::parse(&[closed.to_string()]).unwrap());
    let err = c
        .has_manifest(&image(closed, "team/app"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the mirror could not be reached (connection failed)"
    );
}

#[tokio::test]
async fn a_token_service_elsewhere_is_not_contacted() {
    let s = servers().await;
    let c = client(&s, &[s.mirror.to_string()]);
    let err = c
        .has_manifest(&image(s.mirror, "team/realm-elsewhere"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("not on the allowlist"), "{text}");
    assert!(!text.contains(&s.elsewhere.to_string()), "{text}");
    assert!(s.elsewhere_seen.paths().is_empty());

    // Listed as well (as Docker Hub's auth.docker.io would be): contacted.
    let c = client(&s, &[s.mirror.to_string(), s.elsewhere.to_string()]);
    assert!(
        c.has_manifest(&image(s.mirror, "team/realm-elsewhere"))
            .await
            .is_err(),
        "the mirror refuses the token of the other server"
    );
    assert_eq!(s.elsewhere_seen.paths(), ["/token"]);
}

#[tokio::test]
async fn huge_answers_are_cut_off() {
    let s = servers().await;
    let c = client(&s, &[s.mirror.to_string()]);

    // A token service that never stops talking: the read stops at the cap.
    let err = c
        .has_manifest(&image(s.mirror, "team/huge"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit, .. } if limit == MAX_BODY_BYTES),
        "{err:?}"
    );
    let produced = s.mirror_seen.chunks.load(Ordering::SeqCst);
    assert!(
        produced < 256,
        "the client stopped reading early, not after {produced} chunks of 64 KiB"
    );

    // One that declares a body over the cap: refused before reading it.
    let err = c
        .has_manifest(&image(s.mirror, "team/declared"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err:?}");
}
