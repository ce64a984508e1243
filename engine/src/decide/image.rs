//! Image references and their mirror equivalents, for the ImagePullBackOff remediation.

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry.example.com`, `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `team/app`, `library/nginx`.
    pub repository: String,
    /// `:1.2` or `@sha256:...`.
    pub reference: String,
}

/// Parses `[registry/]repository[:tag][@digest]`; Docker Hub names get `docker.io` and `library/`.
pub fn parse_image(image: &str) -> Option<ImageRef> {
    if image.is_empty() || image.contains(char::is_whitespace) {
        return None;
    }
    let (name, reference) = match image.find('@') {
        Some(i) => (&image[..i], image[i..].to_owned()),
        None => match image.rfind(':') {
            Some(i) if !image[i..].contains('/') => (&image[..i], image[i..].to_owned()),
            _ => (image, ":latest".to_owned()),
        },
    };
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let is_registry = first.contains('.') || first.contains(':') || first == "localhost";
    let (registry, repository) = if is_registry {
        (first.to_owned(), rest.to_owned())
    } else if first.is_empty() {
        ("docker.io".to_owned(), format!("library/{rest}"))
    } else {
        ("docker.io".to_owned(), name.to_owned())
    };
    if repository.is_empty() {
        return None;
    }
    Some(ImageRef {
        registry,
        repository,
        reference,
    })
}

/// The image as served by `mirror` (`host[:port][/prefix]`): the original repository path under the
/// mirror's prefix. `None` when the image already comes from the mirror or cannot be parsed.
pub fn mirror_image(image: &str, mirror: &str) -> Option<(ImageRef, String)> {
    let original = parse_image(image)?;
    let mirror = mirror.trim_end_matches('/');
    let (host, prefix) = mirror.split_once('/').map_or((mirror, ""), |(h, p)| (h, p));
    if original.registry == host {
        return None;
    }
    let repository = if prefix.is_empty() {
        original.repository.clone()
    } else {
        format!("{prefix}/{}", original.repository)
    };
    let mirrored = ImageRef {
        registry: host.to_owned(),
        repository,
        reference: original.reference.clone(),
    };
    let text = format!(
        "{}/{}{}",
        mirrored.registry, mirrored.repository, mirrored.reference
    );
    // The kubelet reads the text, not the struct: a mirror host that does not look like one (no
    // dot, no port, not localhost) would send the pull to Docker Hub under that name, after the
    // allowlist and the existence check passed for the mirror.
    (parse_image(&text).as_ref() == Some(&mirrored)).then_some((mirrored, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let r = |reg: &str, repo: &str, re: &str| {
            Some(ImageRef {
                registry: reg.into(),
                repository: repo.into(),
                reference: re.into(),
            })
        };
        let cases = [
            ("nginx", r("docker.io", "library/nginx", ":latest")),
            ("nginx:1.27", r("docker.io", "library/nginx", ":1.27")),
            ("bitnami/redis:7", r("docker.io", "bitnami/redis", ":7")),
            (
                "registry.example.com/team/app:1",
                r("registry.example.com", "team/app", ":1"),
            ),
            ("127.0.0.1:5000/app", r("127.0.0.1:5000", "app", ":latest")),
            ("localhost/app:2", r("localhost", "app", ":2")),
            ("ghcr.io/o/r@sha256:abc", r("ghcr.io", "o/r", "@sha256:abc")),
            ("", None),
            ("bad image", None),
        ];
        for (image, want) in cases {
            assert_eq!(parse_image(image), want, "{image}");
        }
    }

    #[test]
    fn mirror_table() {
        let cases = [
            (
                "registry.example.com/team/app:1",
                "mirror.local/cache",
                Some("mirror.local/cache/team/app:1"),
            ),
            (
                "nginx:1.27",
                "127.0.0.1:5000",
                Some("127.0.0.1:5000/library/nginx:1.27"),
            ),
            (
                "ghcr.io/o/r@sha256:abc",
                "m.example/",
                Some("m.example/o/r@sha256:abc"),
            ),
            ("mirror.local/cache/team/app:1", "mirror.local/cache", None),
            // Found by tests/fuzz.rs: these would be pulled from docker.io/registry-mirror/...
            ("nginx:1.27", "registry-mirror", None),
            ("nginx:1.27", "registry-mirror/cache", None),
            (
                "nginx:1.27",
                "registry-mirror:5000",
                Some("registry-mirror:5000/library/nginx:1.27"),
            ),
            (
                "nginx:1.27",
                "localhost/cache",
                Some("localhost/cache/library/nginx:1.27"),
            ),
        ];
        for (image, mirror, want) in cases {
            assert_eq!(
                mirror_image(image, mirror).map(|(_, t)| t).as_deref(),
                want,
                "{image} via {mirror}"
            );
        }
    }
}
