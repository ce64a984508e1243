//! The README's measured figures: each row of its figures table names a command (`cargo ...` or
//! `make ...`), and both the figure and the command appear in docs/BENCHMARKS.md, where the runs
//! are described. A figure without a command, or one the benchmarks page does not back, fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_e2e::cluster::repo_root;

/// The rows (figure, measured, command) of the README table headed `| Figure | Measured | Command |`.
fn readme_figures(readme: &str) -> Vec<(String, String, String)> {
    readme
        .lines()
        .skip_while(|l| !l.starts_with("| Figure | Measured | Command |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            assert_eq!(cells.len(), 3, "a figures row has three cells: {l}");
            (cells[0].clone(), cells[1].clone(), cells[2].clone())
        })
        .collect()
}

#[test]
fn every_readme_figure_has_a_command_and_is_in_the_benchmarks() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let benchmarks = std::fs::read_to_string(repo_root().join("docs/BENCHMARKS.md")).unwrap();
    let rows = readme_figures(&readme);
    assert!(rows.len() >= 5, "the README's figures table: {rows:?}");
    for (what, measured, command) in rows {
        let bare = command.trim_matches('`');
        assert!(
            command.starts_with('`')
                && command.ends_with('`')
                && (bare.starts_with("cargo ") || bare.starts_with("make ")),
            "{what}: no command to reproduce it ({command:?})"
        );
        // Each number of the figure (units are columns there, not always words).
        let numbers: Vec<&str> = measured
            .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .map(|n| n.trim_matches(|c| c == '.' || c == ','))
            .filter(|n| !n.is_empty())
            .collect();
        assert!(!numbers.is_empty(), "{what}: no number in {measured:?}");
        for n in numbers {
            assert!(
                benchmarks.contains(n),
                "{what}: {n} ({measured}) is not in docs/BENCHMARKS.md"
            );
        }
        assert!(
            benchmarks.contains(bare),
            "{what}: docs/BENCHMARKS.md does not name `{bare}`"
        );
    }
}
