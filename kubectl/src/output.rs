//! Output: a table by default, or the same data as JSON or YAML for scripts.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Something that prints as a table for people.
pub trait Render {
    fn table(&self) -> String;
}

/// The text to print for `value` in `format`.
pub fn render<T: Serialize + Render>(format: Format, value: &T) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => value.table(),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(value)?),
        Format::Yaml => serde_norway::to_string(value)?,
    })
}

/// Rows under a header, each column as wide as its widest cell (two spaces between columns).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Milliseconds since the epoch as RFC 3339 (UTC, seconds).
pub fn time(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// A duration as people read it: `45s`, `12m`, `3h`, `2d`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_ages_read_as_people_say_them() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["api".into(), "Open".into()],
                vec!["checkout".into(), "Resolved".into()],
            ],
        );
        assert_eq!(t, "NAME      STATE\napi       Open\ncheckout  Resolved\n");
        let cases = [
            (0, "0s"),
            (59_999, "59s"),
            (60_000, "1m"),
            (7_200_000, "2h"),
            (-5, "0s"),
        ];
        for (ms, want) in cases {
            assert_eq!(age(ms), want);
        }
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
    }
}
