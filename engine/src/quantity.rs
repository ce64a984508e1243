//! Kubernetes memory quantities <-> bytes, for the memory bump arithmetic.

/// Parses a quantity such as `256Mi`, `1Gi`, `1.5Gi`, `512M`, `1e9` or `1048576` into bytes.
/// Returns `None` for anything else (including milli units, which make no sense for memory).
pub fn parse_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    // Whole numbers exactly: through f64, anything above 2^53 bytes came back rounded.
    if let Ok(whole) = number.parse::<u64>() {
        let exact = match suffix {
            "" => Some(1),
            "Ki" => Some(1 << 10),
            "Mi" => Some(1 << 20),
            "Gi" => Some(1 << 30),
            "Ti" => Some(1 << 40),
            "k" => Some(1_000),
            "M" => Some(1_000_000),
            "G" => Some(1_000_000_000),
            "T" => Some(1_000_000_000_000),
            _ => None,
        };
        if let Some(unit) = exact {
            return whole.checked_mul(unit);
        }
    }
    let value: f64 = number.parse().ok()?;
    let bytes = (value * multiplier).ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Formats bytes as the largest binary unit that divides them exactly (`356Mi`), else plain bytes.
pub fn format_bytes(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases = [
            ("256Mi", Some(256 << 20)),
            ("1Gi", Some(1 << 30)),
            ("1.5Gi", Some(3 << 29)),
            ("100Mi", Some(100 << 20)),
            ("512M", Some(512_000_000)),
            ("1k", Some(1000)),
            ("1048576", Some(1 << 20)),
            ("1e3", Some(1000)),
            ("128974848", Some(128_974_848)),
            ("500m", None),
            ("lots", None),
            ("", None),
            ("1Zi", None),
            // Found by tests/fuzz.rs: above 2^53 whole numbers came back rounded.
            ("9007199254740993", Some(9_007_199_254_740_993)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("16777216Ti", None),
        ];
        for (q, want) in cases {
            assert_eq!(parse_bytes(q), want, "{q}");
        }
    }

    #[test]
    fn format_table() {
        assert_eq!(format_bytes(356 << 20), "356Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(
            format_bytes(parse_bytes("1.2Gi").unwrap_or_default()),
            "1288490189"
        );
    }
}
