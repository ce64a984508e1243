//! Reading the previous container's log tail, bounded, from the kubelet's CRI log files.
//!
//! CRI log lines look like `2026-01-01T00:00:00.000000000Z stdout F message`; the tag `P` marks a
//! partial line that continues on the next one. Everything returned is sanitised: control characters
//! escaped, invalid UTF-8 replaced, each line and the whole tail capped, cuts marked.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Size limits for one tail.
#[derive(Clone, Copy, Debug)]
pub struct TailLimits {
    /// Lines kept (the last ones).
    pub lines: usize,
    /// Bytes kept in total, after sanitising.
    pub total_bytes: usize,
    /// Bytes kept of one line.
    pub line_bytes: usize,
    /// Bytes read from the end of one file at most.
    pub scan_bytes: u64,
}

impl Default for TailLimits {
    fn default() -> Self {
        Self {
            lines: 50,
            total_bytes: 16 * 1024,
            line_bytes: 2048,
            scan_bytes: 256 * 1024,
        }
    }
}

/// A bounded, sanitised tail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    pub lines: Vec<String>,
    /// Lines or bytes were cut to stay within the limits.
    pub truncated: bool,
}

/// Escapes control characters (keeping tabs) so a log line cannot forge terminal output or log
/// records, and cuts it to `max_bytes` on a character boundary with a visible mark.
pub fn sanitize_line(raw: &str, max_bytes: usize) -> (String, bool) {
    let mut out = String::with_capacity(raw.len().min(max_bytes));
    let mut cut = false;
    for c in raw.chars() {
        let piece: String = if c.is_control() && c != '\t' {
            format!("\\u{{{:x}}}", c as u32)
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > max_bytes {
            cut = true;
            break;
        }
        out.push_str(&piece);
    }
    if cut {
        out.push_str(" …[line cut]");
    }
    (out, cut)
}

/// Splits CRI content into messages, joining partial (`P`) lines. Lines that are not CRI-formatted
/// are kept whole. Invalid UTF-8 is replaced, never fatal.
pub fn parse_cri(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut messages = Vec::new();
    let mut partial = String::new();
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(4, ' ');
        let (ts, stream, tag, msg) = (parts.next(), parts.next(), parts.next(), parts.next());
        let is_cri = ts.is_some_and(|t| t.len() >= 20 && t.as_bytes().get(4) == Some(&b'-'))
            && matches!(stream, Some("stdout" | "stderr"))
            && tag.is_some();
        if !is_cri {
            partial.clear();
            messages.push(line.to_owned());
            continue;
        }
        let msg = msg.unwrap_or_default();
        // The tag may carry more fields separated by ':'; the first is P or F.
        if tag.is_some_and(|t| t.split(':').next() == Some("P")) {
            partial.push_str(msg);
        } else {
            partial.push_str(msg);
            messages.push(std::mem::take(&mut partial));
        }
    }
    if !partial.is_empty() {
        messages.push(partial);
    }
    messages
}

/// The last `scan_bytes` of a file, starting at a line boundary when the read began mid-file.
fn read_end(path: &Path, scan_bytes: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(scan_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    file.take(scan_bytes).read_to_end(&mut buf)?;
    if start > 0 {
        // Drop the first, probably partial, line.
        let cut = buf
            .iter()
            .position(|b| *b == b'\n')
            .map_or(buf.len(), |i| i + 1);
        buf.drain(..cut);
        return Ok((buf, true));
    }
    Ok((buf, false))
}

/// Rotated siblings of a kubelet log file (`N.log.<timestamp>`, uncompressed only), newest first.
fn rotated_siblings(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && !n.ends_with(".gz"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.reverse();
    found
}

/// The tail of the CRI log at `path`, reaching into its rotated predecessor when the current file
/// holds fewer lines than asked for.
pub fn tail_file(path: &Path, limits: TailLimits) -> std::io::Result<Tail> {
    let (bytes, mut truncated) = read_end(path, limits.scan_bytes)?;
    let mut messages = parse_cri(&bytes);
    if messages.len() < limits.lines {
        for older in rotated_siblings(path) {
            let Ok((bytes, cut)) = read_end(&older, limits.scan_bytes) else {
                continue;
            };
            let mut earlier = parse_cri(&bytes);
            truncated |= cut;
            earlier.append(&mut messages);
            messages = earlier;
            if messages.len() >= limits.lines {
                break;
            }
        }
    }
    Ok(bound(messages, limits, truncated))
}

/// Applies the line count, line size and total size limits, keeping the newest lines.
pub fn bound(messages: Vec<String>, limits: TailLimits, mut truncated: bool) -> Tail {
    if messages.len() > limits.lines {
        truncated = true;
    }
    let start = messages.len().saturating_sub(limits.lines);
    let mut lines: Vec<String> = Vec::with_capacity(messages.len() - start);
    let mut total = 0usize;
    for raw in messages[start..].iter().rev() {
        let (line, cut) = sanitize_line(raw, limits.line_bytes);
        truncated |= cut;
        if total + line.len() > limits.total_bytes {
            truncated = true;
            break;
        }
        total += line.len();
        lines.push(line);
    }
    lines.reverse();
    Tail { lines, truncated }
}

/// Where the kubelet keeps a container's logs: `<root>/<ns>_<pod>_<uid>/<container>/<n>.log`, one
/// file per run (attempt); `evidence::FailedRun` says which run failed.
/// The kubelet's log file of a container's run `index` (0 for the first run):
/// `<root>/<namespace>_<pod>_<uid>/<container>/<index>.log`.
pub fn container_log_path(
    root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    index: u32,
) -> Option<PathBuf> {
    // The names come from the apiserver, which validates them; still, none may step out of the
    // log directory (`/`, `..`) or leave a path component empty.
    let component = |s: &str| !s.is_empty() && !s.contains(['/', '\0']) && s != "." && s != "..";
    if ![namespace, pod, uid, container].into_iter().all(component) {
        return None;
    }
    Some(
        root.join(format!("{namespace}_{pod}_{uid}"))
            .join(container)
            .join(format!("{index}.log")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(lines: usize) -> TailLimits {
        TailLimits {
            lines,
            ..TailLimits::default()
        }
    }

    #[test]
    fn parses_cri_lines_and_joins_partials() {
        let input = b"2026-01-01T00:00:00.000000000Z stdout F hello world\n\
2026-01-01T00:00:01.000000000Z stderr P part one, \n\
2026-01-01T00:00:01.000000000Z stderr P part two, \n\
2026-01-01T00:00:01.000000000Z stderr F end\n\
2026-01-01T00:00:02.000000000Z stdout F:x tagged\n";
        assert_eq!(
            parse_cri(input),
            vec!["hello world", "part one, part two, end", "tagged"]
        );
    }

    #[test]
    fn keeps_non_cri_lines_and_a_trailing_partial() {
        let input = b"plain text line\n2026-01-01T00:00:00Z stdout P unfinished";
        assert_eq!(parse_cri(input), vec!["plain text line", "unfinished"]);
    }

    #[test]
    fn empty_cri_message_is_an_empty_line() {
        assert_eq!(parse_cri(b"2026-01-01T00:00:00Z stdout F \n"), vec![""]);
        assert_eq!(parse_cri(b"2026-01-01T00:00:00Z stdout F\n"), vec![""]);
    }

    #[test]
    fn bad_bytes_are_replaced_not_fatal() {
        let mut input = b"2026-01-01T00:00:00Z stdout F caf".to_vec();
        input.extend_from_slice(&[0xff, 0xfe]);
        input.extend_from_slice(b" ok\n");
        let got = parse_cri(&input);
        assert_eq!(got, vec!["caf\u{fffd}\u{fffd} ok"]);
    }

    #[test]
    fn control_characters_are_escaped() {
        let (line, cut) = sanitize_line("\x1b[31mred\x1b[0m\tok\r\x07", 1000);
        assert_eq!(line, "\\u{1b}[31mred\\u{1b}[0m\tok\\u{d}\\u{7}");
        assert!(!cut);
    }

    #[test]
    fn huge_lines_are_cut_on_a_char_boundary_with_a_mark() {
        let raw = "é".repeat(5000);
        let (line, cut) = sanitize_line(&raw, 2048);
        assert!(cut);
        assert!(line.ends_with(" …[line cut]"));
        assert!(line.len() <= 2048 + " …[line cut]".len());
        assert!(line.starts_with("éé"));
    }

    #[test]
    fn keeps_the_last_lines_within_count_and_bytes() {
        let messages: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let tail = bound(messages.clone(), limits(5), false);
        assert_eq!(
            tail.lines,
            vec!["line 95", "line 96", "line 97", "line 98", "line 99"]
        );
        assert!(tail.truncated);

        let tail = bound(
            messages,
            TailLimits {
                lines: 50,
                total_bytes: 20,
                ..TailLimits::default()
            },
            false,
        );
        assert_eq!(tail.lines, vec!["line 98", "line 99"]);
        assert!(tail.truncated);

        let tail = bound(vec!["a".into()], limits(5), false);
        assert_eq!(
            tail,
            Tail {
                lines: vec!["a".into()],
                truncated: false
            }
        );
    }

    fn cri(lines: &[&str]) -> String {
        lines
            .iter()
            .map(|l| format!("2026-01-01T00:00:00.000000000Z stdout F {l}\n"))
            .collect()
    }

    #[test]
    fn reads_a_file_and_its_rotated_predecessor() {
        let dir = std::env::temp_dir().join(format!("logtail-{}-rot", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        std::fs::write(dir.join("0.log.20260101-000000"), cri(&["old 1", "old 2"])).unwrap();
        std::fs::write(dir.join("0.log.20251231-000000.gz"), b"\x1f\x8bcompressed").unwrap();
        std::fs::write(&path, cri(&["new 1"])).unwrap();
        let tail = tail_file(&path, limits(3)).unwrap();
        assert_eq!(tail.lines, vec!["old 1", "old 2", "new 1"]);
        // Enough lines in the current file: the rotated one is not needed.
        let tail = tail_file(&path, limits(1)).unwrap();
        assert_eq!(tail.lines, vec!["new 1"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_only_the_end_of_a_large_file() {
        let dir = std::env::temp_dir().join(format!("logtail-{}-big", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("3.log");
        let lines: Vec<String> = (0..20_000).map(|i| format!("message number {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        std::fs::write(&path, cri(&refs)).unwrap();
        let tail = tail_file(
            &path,
            TailLimits {
                lines: 3,
                scan_bytes: 4096,
                ..TailLimits::default()
            },
        )
        .unwrap();
        assert_eq!(
            tail.lines,
            vec![
                "message number 19997",
                "message number 19998",
                "message number 19999"
            ]
        );
        assert!(tail.truncated);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn container_log_path_follows_the_kubelet_layout() {
        let p = container_log_path(Path::new("/var/log/pods"), "prod", "api-1", "u-1", "app", 2)
            .unwrap();
        assert_eq!(p, Path::new("/var/log/pods/prod_api-1_u-1/app/2.log"));
        let p = container_log_path(Path::new("/x"), "a", "b", "c", "d", 0).unwrap();
        assert_eq!(p, Path::new("/x/a_b_c/d/0.log"));
    }

    #[test]
    fn container_log_path_never_leaves_the_log_directory() {
        let root = Path::new("/var/log/pods");
        for (ns, pod, uid, container) in [
            ("prod", "api-1", "u-1", ".."),
            ("prod", "api-1", "u-1", "../../etc"),
            ("a/../../b", "api-1", "u-1", "app"),
            ("prod", "", "u-1", "app"),
            ("prod", "api-1", "u-1", "."),
        ] {
            assert_eq!(
                container_log_path(root, ns, pod, uid, container, 2),
                None,
                "{container}"
            );
        }
    }

    /// Fuzzing on stable Rust (proptest): whatever a log file holds, and whatever the limits, the
    /// tail stays within them and escapes control characters. Budget: `PROPTEST_CASES`.
    mod fuzz {
        use std::path::Component;

        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::*;

        const CUT_MARK: &str = " …[line cut]";

        fn limits() -> impl Strategy<Value = TailLimits> {
            (0..8usize, 0..400usize, 0..120usize).prop_map(|(lines, total_bytes, line_bytes)| {
                TailLimits {
                    lines,
                    total_bytes,
                    line_bytes,
                    ..TailLimits::default()
                }
            })
        }

        /// CRI lines for `messages`, each split into `P` pieces at character boundaries.
        fn cri(messages: &[String], cuts: &[usize]) -> String {
            let mut out = String::new();
            for (i, m) in messages.iter().enumerate() {
                let chars: Vec<char> = m.chars().collect();
                let cut = cuts.get(i).copied().unwrap_or(0) % (chars.len() + 1);
                let (head, tail): (String, String) =
                    (chars[..cut].iter().collect(), chars[cut..].iter().collect());
                let stream = if i % 2 == 0 { "stdout" } else { "stderr" };
                if !head.is_empty() {
                    out.push_str(&format!(
                        "2026-01-01T00:00:00.000000000Z {stream} P {head}\n"
                    ));
                }
                out.push_str(&format!(
                    "2026-01-01T00:00:00.000000001Z {stream} F {tail}\n"
                ));
            }
            out
        }

        proptest! {
            #[test]
            fn fuzz_any_log_bytes_give_a_bounded_escaped_tail(
                bytes in vec(any::<u8>(), 0..2000), limits in limits(),
            ) {
                let tail = bound(parse_cri(&bytes), limits, false);
                prop_assert!(tail.lines.len() <= limits.lines);
                prop_assert!(tail.lines.iter().map(String::len).sum::<usize>() <= limits.total_bytes);
                for line in &tail.lines {
                    prop_assert!(line.len() <= limits.line_bytes + CUT_MARK.len(), "{line:?}");
                    prop_assert!(!line.chars().any(|c| c.is_control() && c != '\t'), "{line:?}");
                }
            }

            /// Nothing is dropped or changed without saying so: an untruncated tail is the newest
            /// messages, escaped, in order.
            #[test]
            fn fuzz_untruncated_tails_are_the_newest_messages(
                messages in vec(any::<String>(), 0..12), limits in limits(),
            ) {
                let tail = bound(messages.clone(), limits, false);
                let escaped: Vec<String> = messages
                    .iter()
                    .map(|m| sanitize_line(m, usize::MAX).0)
                    .collect();
                prop_assert!(escaped.ends_with(&tail.lines) || tail.truncated);
                if !tail.truncated {
                    prop_assert_eq!(tail.lines, escaped);
                }
            }

            /// CRI files written by the kubelet, partial lines included, give back the messages.
            #[test]
            fn fuzz_cri_files_give_back_their_messages(
                messages in vec("[^\n]{0,40}", 1..10), cuts in vec(any::<usize>(), 10),
            ) {
                let text = cri(&messages, &cuts);
                prop_assert_eq!(parse_cri(text.as_bytes()), messages);
            }

            #[test]
            fn fuzz_log_paths_stay_under_the_root(
                names in vec(prop_oneof![any::<String>(), Just("..".to_owned()), "[a-z./]{0,6}"], 4),
                restarts in any::<u32>(),
            ) {
                let root = Path::new("/var/log/pods");
                if let Some(p) = container_log_path(root, &names[0], &names[1], &names[2], &names[3], restarts) {
                    let rest = p.strip_prefix(root).unwrap();
                    let parts: Vec<Component> = rest.components().collect();
                    prop_assert_eq!(parts.len(), 3, "{:?}", p);
                    prop_assert!(parts.iter().all(|c| matches!(c, Component::Normal(_))), "{:?}", p);
                }
            }
        }
    }
}
