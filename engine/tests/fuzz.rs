//! Fuzzing the engine's parsers on stable Rust (proptest): memory quantities and image references,
//! which come from pod specs and policies anyone with edit rights writes. Budget: `PROPTEST_CASES`
//! (proptest's 256 in `make test`, more in `make fuzz`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::decide::image::{ImageRef, mirror_image, parse_image};
use auto_agent_engine::quantity::{format_bytes, parse_bytes};
use proptest::prelude::*;

const UNITS: [(&str, u64); 9] = [
    ("", 1),
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,8}\\.[a-z]{2,5}",
        "[a-z0-9]{1,8}(\\.[a-z]{2,5})?:[0-9]{2,5}",
        Just("localhost".to_owned()),
    ]
}

fn repository() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}([._-][a-z0-9]{1,4})?(/[a-z0-9]{1,8}){0,2}"
}

fn reference() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}".prop_map(|t| format!(":{t}")),
        "[a-f0-9]{64}".prop_map(|d| format!("@sha256:{d}")),
    ]
}

proptest! {
    /// Any text is a quantity or not; never a panic.
    #[test]
    fn fuzz_any_quantity_parses_or_is_refused(q in any::<String>()) {
        let _ = parse_bytes(&q);
    }

    /// What the memory bump writes reads back as the same number of bytes, for every size.
    #[test]
    fn fuzz_formatted_bytes_read_back_exactly(bytes in any::<u64>()) {
        prop_assert_eq!(parse_bytes(&format_bytes(bytes)), Some(bytes));
    }

    /// Whole numbers with a unit are exact (or refused when they do not fit in 64 bits).
    #[test]
    fn fuzz_whole_quantities_are_exact(n in any::<u64>(), unit in 0..UNITS.len()) {
        let (suffix, size) = UNITS[unit];
        prop_assert_eq!(parse_bytes(&format!("{n}{suffix}")), n.checked_mul(size));
    }

    /// Any text is an image reference or not; what parses has every part.
    #[test]
    fn fuzz_any_image_parses_or_is_refused(image in any::<String>()) {
        if let Some(r) = parse_image(&image) {
            prop_assert!(!r.registry.is_empty() && !r.repository.is_empty(), "{r:?}");
            prop_assert!(r.reference.starts_with(':') || r.reference.starts_with('@'), "{r:?}");
        }
    }

    /// A reference with an explicit registry parses into exactly its parts.
    #[test]
    fn fuzz_composed_images_parse_into_their_parts(
        registry in host(), repository in repository(), reference in reference(),
    ) {
        let image = format!("{registry}/{repository}{reference}");
        prop_assert_eq!(parse_image(&image), Some(ImageRef { registry, repository, reference }));
    }

    /// The mirrored image the controller writes is pulled from the mirror it checked: its text
    /// parses back to the same registry, repository and reference, and mirroring it again
    /// changes nothing.
    #[test]
    fn fuzz_mirrored_images_point_at_the_mirror(
        image in prop_oneof![any::<String>(), repository().prop_map(|r| format!("{r}:1"))],
        mirror in prop_oneof![
            any::<String>(),
            "[a-z0-9.:-]{1,12}(/[a-z0-9._-]{1,6}){0,2}",
            (host(), "(/[a-z0-9]{1,6}){0,2}").prop_map(|(h, p)| format!("{h}{p}")),
        ],
    ) {
        if let Some((mirrored, text)) = mirror_image(&image, &mirror) {
            prop_assert_eq!(parse_image(&text), Some(mirrored.clone()));
            let host = mirror.trim_end_matches('/').split('/').next().unwrap_or_default();
            prop_assert_eq!(&mirrored.registry, host);
            prop_assert_eq!(&mirrored.reference, &parse_image(&image).unwrap().reference);
            prop_assert!(mirror_image(&text, &mirror).is_none(), "mirrored twice: {text}");
        }
    }
}
