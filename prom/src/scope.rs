//! A policy's PromQL, confined to the policy's namespace. A namespace's AutoRemediationPolicy
//! carries PromQL the controller runs with its own access to Prometheus, which sees every tenant's
//! series; so before a query goes out it is parsed (`promql-parser`), and every vector selector
//! (also inside range selectors, subqueries and function arguments) gets a
//! `namespace="<policy namespace>"` matcher. A selector that names another namespace with `=` is
//! refused rather than silently emptied, and what cannot be confined (a parse error, `or` inside a
//! selector, `info()`, which reads `target_info` series its selectors do not name) is refused with
//! a reason the policy's status shows.
//!
//! Placeholders, substituted before parsing:
//! - `$namespace`: the policy's namespace;
//! - `$workload`: the workload's name;
//! - `$pods`: a regular expression matching exactly the names of the workload's own pods
//!   ([`pods_regex`]), for `pod=~"$pods"`. The older `$workload-.+` is read as `$pods`: it also
//!   matched the pods of every workload whose name starts with this one's (`api` and
//!   `api-gateway`).

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};

/// Why a query cannot run for a policy. Messages name the query's problem, never a series value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("the query is not valid PromQL: {0}")]
    Parse(String),
    #[error(
        "the query selects {matcher}, but a policy's queries read only its own namespace {namespace:?}"
    )]
    OtherNamespace { matcher: String, namespace: String },
    #[error(
        "the query uses `or` inside a selector ({0}), which cannot be confined to the policy's namespace"
    )]
    OrMatchers(String),
    #[error(
        "the query calls {0}(), which reads series its selectors do not name; it cannot be confined to the policy's namespace"
    )]
    Function(&'static str),
    #[error("{what} {value:?} is not a Kubernetes name")]
    BadName { what: &'static str, value: String },
}

impl ScopeError {
    /// A short, stable label for metrics and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Parse(_) => "invalid",
            Self::OtherNamespace { .. } | Self::OrMatchers(_) | Self::Function(_) => "unscoped",
            Self::BadName { .. } => "bad_name",
        }
    }
}

/// Functions whose result depends on series that no selector of theirs names.
const UNSCOPABLE_FUNCTIONS: &[&str] = &["info"];

/// The label every tenant selector is confined by.
const NAMESPACE_LABEL: &str = "namespace";

/// Characters of the random parts of generated pod names (`pod-template-hash` and the 5-character
/// suffix): Kubernetes' `SafeEncodeString` alphabet, without vowels, so no word of a workload name
/// (`gateway`) can pass for one.
const SAFE: &str = "[bcdfghjklmnpqrstvwxz2456789]";

/// The API server cuts a `generateName` prefix to this many characters before adding the 5
/// random ones (63 - 5).
const MAX_GENERATED_PREFIX: usize = 58;

/// A regular expression (RE2, fully anchored as PromQL anchors label matchers) matching the names
/// of the pods `kind`/`name` creates, and no other workload's:
/// - Deployment: `<name>-<pod-template-hash>-<5 random>` (the ReplicaSet's name plus the suffix);
/// - StatefulSet: `<name>-<ordinal>`;
/// - DaemonSet, ReplicaSet, Job: `<name>-<5 random>`;
/// - anything else (a bare pod): the name itself.
///
/// Generated prefixes longer than 58 characters are cut by the API server, and so are they here.
/// A `.` in the name is written `[.]`, so the expression needs no backslash in a PromQL string.
pub fn pods_regex(kind: &str, name: &str) -> String {
    let literal = |s: &str| s.replace('.', "[.]");
    match kind {
        "StatefulSet" => format!("{}-[0-9]+", literal(name)),
        // Nothing is cut: one expression for every hash length.
        "Deployment" if name.len() + 2 + 10 <= MAX_GENERATED_PREFIX => {
            format!("{}-{SAFE}{{1,10}}-{SAFE}{{5}}", literal(name))
        }
        "Deployment" => {
            // One alternative per hash length, each cut where the API server cuts it.
            let mut alternatives: Vec<String> = Vec::new();
            for hash_len in 1..=10 {
                let alternative = generated(name, Some(hash_len));
                if !alternatives.contains(&alternative) {
                    alternatives.push(alternative);
                }
            }
            format!("(?:{})", alternatives.join("|"))
        }
        "DaemonSet" | "ReplicaSet" | "Job" => generated(name, None),
        _ => literal(name),
    }
}

/// `generateName` of `name-` (or `name-<hash_len random>-`), cut at 58 characters, plus 5
/// random characters, as a regular expression.
fn generated(name: &str, hash_len: Option<usize>) -> String {
    enum Token {
        Char(char),
        Random,
    }
    let mut tokens: Vec<Token> = name.chars().map(Token::Char).collect();
    tokens.push(Token::Char('-'));
    if let Some(n) = hash_len {
        tokens.extend((0..n).map(|_| Token::Random));
        tokens.push(Token::Char('-'));
    }
    tokens.truncate(MAX_GENERATED_PREFIX);
    tokens.extend((0..5).map(|_| Token::Random));
    let mut out = String::new();
    let mut random = 0;
    let flush = |out: &mut String, random: &mut usize| {
        if *random > 0 {
            out.push_str(SAFE);
            if *random > 1 {
                out.push_str(&format!("{{{random}}}"));
            }
            *random = 0;
        }
    };
    for token in tokens {
        match token {
            Token::Random => random += 1,
            Token::Char(c) => {
                flush(&mut out, &mut random);
                if c == '.' {
                    out.push_str("[.]");
                } else {
                    out.push(c);
                }
            }
        }
    }
    flush(&mut out, &mut random);
    out
}

/// Whether `s` is a name the API server could have given a namespace or workload (DNS-1123
/// subdomain characters): nothing that could end a PromQL string or add a matcher.
fn is_kubernetes_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The policy's query `template` for one workload: placeholders substituted, then confined to
/// `namespace` by [`scope_to_namespace`].
pub fn render(
    template: &str,
    namespace: &str,
    kind: &str,
    workload: &str,
) -> Result<String, ScopeError> {
    if !is_kubernetes_name(namespace) {
        return Err(ScopeError::BadName {
            what: "namespace",
            value: namespace.to_owned(),
        });
    }
    if !is_kubernetes_name(workload) {
        return Err(ScopeError::BadName {
            what: "workload",
            value: workload.to_owned(),
        });
    }
    let query = template
        .replace("$workload-.+", "$pods")
        .replace("$pods", &pods_regex(kind, workload))
        .replace("$namespace", namespace)
        .replace("$workload", workload);
    scope_to_namespace(&query, namespace)
}

/// `query` with every vector selector confined to `namespace` (a `namespace="<ns>"` matcher added
/// where it has none), as PromQL text. Refuses a selector with `namespace="<another>"`, `or`
/// between matchers, and functions that read series outside their selectors.
pub fn scope_to_namespace(query: &str, namespace: &str) -> Result<String, ScopeError> {
    if !is_kubernetes_name(namespace) {
        return Err(ScopeError::BadName {
            what: "namespace",
            value: namespace.to_owned(),
        });
    }
    let mut expr = parser::parse(query).map_err(ScopeError::Parse)?;
    scope(&mut expr, namespace)?;
    Ok(expr.to_string())
}

fn scope(expr: &mut Expr, namespace: &str) -> Result<(), ScopeError> {
    match expr {
        Expr::Aggregate(a) => {
            scope(&mut a.expr, namespace)?;
            if let Some(param) = &mut a.param {
                scope(param, namespace)?;
            }
            Ok(())
        }
        Expr::Unary(u) => scope(&mut u.expr, namespace),
        Expr::Binary(b) => {
            scope(&mut b.lhs, namespace)?;
            scope(&mut b.rhs, namespace)
        }
        Expr::Paren(p) => scope(&mut p.expr, namespace),
        Expr::Subquery(s) => scope(&mut s.expr, namespace),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::VectorSelector(vs) => scope_selector(vs, namespace),
        Expr::MatrixSelector(ms) => scope_selector(&mut ms.vs, namespace),
        Expr::Call(call) => {
            if let Some(name) = UNSCOPABLE_FUNCTIONS.iter().find(|f| **f == call.func.name) {
                return Err(ScopeError::Function(name));
            }
            for arg in &mut call.args.args {
                scope(arg, namespace)?;
            }
            Ok(())
        }
        // The parser never produces extensions; whatever one would read is unknown.
        Expr::Extension(_) => Err(ScopeError::Parse("an extension expression".to_owned())),
    }
}

fn scope_selector(vs: &mut VectorSelector, namespace: &str) -> Result<(), ScopeError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(ScopeError::OrMatchers(vs.to_string()));
    }
    let mut confined = false;
    for m in vs
        .matchers
        .matchers
        .iter()
        .filter(|m| m.name == NAMESPACE_LABEL)
    {
        if m.op == MatchOp::Equal {
            if m.value != namespace {
                return Err(ScopeError::OtherNamespace {
                    matcher: m.to_string(),
                    namespace: namespace.to_owned(),
                });
            }
            confined = true;
        }
        // Other operators (`!=`, `=~`, `!~`) stay: ANDed with the matcher added below they
        // can only narrow the namespace's series further.
    }
    if !confined {
        vs.matchers
            .matchers
            .push(Matcher::new(MatchOp::Equal, NAMESPACE_LABEL, namespace));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `re` matches `s` the way PromQL matches labels: fully anchored.
    fn matches(re: &str, s: &str) -> bool {
        regex::Regex::new(&format!("^(?:{re})$"))
            .unwrap()
            .is_match(s)
    }

    #[test]
    fn the_pods_of_a_workload_and_no_other() {
        // (kind, workload, pod, matches)
        let table: &[(&str, &str, &str, bool)] = &[
            ("Deployment", "api", "api-7d9f8c6b5-x2x4z", true),
            ("Deployment", "api", "api-5b4c9-2xkzq", true),
            ("Deployment", "api", "api-gateway-7d9f8c6b5-x2x4z", false),
            ("Deployment", "api", "api-gateway-x2x4z", false),
            ("Deployment", "api", "api-v2-7d9f8c6b5-x2x4z", false),
            ("Deployment", "api", "api-7d9f8c6b5-x2x4", false),
            ("Deployment", "api", "api-7d9f8c6b5-x2x4zz", false),
            ("Deployment", "api", "api-0", false),
            ("Deployment", "api", "xapi-7d9f8c6b5-x2x4z", false),
            ("Deployment", "api", "api", false),
            ("Deployment", "api.v1", "api.v1-7d9f8c6b5-x2x4z", true),
            ("Deployment", "api.v1", "apixv1-7d9f8c6b5-x2x4z", false),
            ("StatefulSet", "db", "db-0", true),
            ("StatefulSet", "db", "db-12", true),
            ("StatefulSet", "db", "db-replica-0", false),
            ("StatefulSet", "db", "db-0-backup", false),
            ("StatefulSet", "db", "db-7d9f8c6b5-x2x4z", false),
            ("DaemonSet", "agent", "agent-x2x4z", true),
            ("DaemonSet", "agent", "agent-extra-x2x4z", false),
            ("Pod", "solo", "solo", true),
            ("Pod", "solo", "solo-x2x4z", false),
        ];
        for (kind, workload, pod, want) in table {
            let re = pods_regex(kind, workload);
            assert_eq!(
                matches(&re, pod),
                *want,
                "{kind} {workload}: {pod} against {re}"
            );
        }
    }

    #[test]
    fn long_deployment_names_follow_the_api_servers_cut() {
        // 50 characters: "<name>-<hash>-" passes 58 for hashes of 7 or more characters, and
        // the API server cuts the prefix there.
        let name = "a".repeat(50);
        let re = pods_regex("Deployment", &name);
        let cut = |prefix: String| {
            let mut p = prefix;
            p.truncate(MAX_GENERATED_PREFIX);
            format!("{p}x2x4z")
        };
        assert!(matches(&re, &cut(format!("{name}-b4c9f-"))), "{re}");
        assert!(matches(&re, &cut(format!("{name}-7d9f8c6b5-"))), "{re}");
        assert!(matches(&re, &cut(format!("{name}-7d9f8c6b54-"))), "{re}");
        assert!(!matches(&re, &format!("{name}-7d9f8c6b5-x2x4z")), "{re}");
        assert!(
            !matches(&re, &cut(format!("{name}b-7d9f8c6b5-"))),
            "another Deployment whose name starts with this one's: {re}"
        );
        // A name that fills the prefix alone: its pods are the cut name plus the suffix.
        let name = "b".repeat(60);
        let re = pods_regex("Deployment", &name);
        assert!(matches(&re, &format!("{}x2x4z", &name[..58])), "{re}");
    }

    #[test]
    fn every_selector_is_confined_to_the_namespace() {
        // (query, scoped)
        let table: &[(&str, &str)] = &[
            ("up", "up{namespace=\"prod\"}"),
            ("up{job=\"x\"}", "up{job=\"x\",namespace=\"prod\"}"),
            ("up{namespace=\"prod\"}", "up{namespace=\"prod\"}"),
            (
                "sum(rate(x_total[5m]))",
                "sum(rate(x_total{namespace=\"prod\"}[5m]))",
            ),
            (
                "max(a) / on() group_left sum(b{l=\"v\"})",
                "max(a{namespace=\"prod\"}) / on () group_left () sum(b{l=\"v\",namespace=\"prod\"})",
            ),
            (
                "max_over_time(rate(x[1m])[10m:1m])",
                "max_over_time(rate(x{namespace=\"prod\"}[1m])[10m:1m])",
            ),
            (
                "topk(3, x offset 5m)",
                "topk(3, x{namespace=\"prod\"} offset 5m)",
            ),
            (
                "{__name__=~\"x.*\"}",
                "{__name__=~\"x.*\",namespace=\"prod\"}",
            ),
            (
                "label_replace(x, \"namespace\", \"other\", \"\", \"\")",
                "label_replace(x{namespace=\"prod\"}, \"namespace\", \"other\", \"\", \"\")",
            ),
            (
                "x{namespace!=\"kube-system\"}",
                "x{namespace!=\"kube-system\",namespace=\"prod\"}",
            ),
            (
                "x{namespace=~\".+\"}",
                "x{namespace=\"prod\",namespace=~\".+\"}",
            ),
            ("vector(1)", "vector(1)"),
            ("-x", "-x{namespace=\"prod\"}"),
        ];
        for (query, want) in table {
            let got = scope_to_namespace(query, "prod").unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(&got, want, "{query}");
            // Idempotent: the output parses, and scoping it again changes nothing.
            assert_eq!(scope_to_namespace(&got, "prod").unwrap(), got, "{query}");
        }
    }

    #[test]
    fn what_cannot_be_confined_is_refused() {
        // (query, error category, words of the message)
        let table: &[(&str, &str, &str)] = &[
            ("x{namespace=\"other\"}", "unscoped", "namespace=\"other\""),
            (
                "x + on() y{namespace=\"kube-system\"}",
                "unscoped",
                "kube-system",
            ),
            ("rate(x{namespace=\"other\"}[5m])", "unscoped", "other"),
            ("info(x)", "unscoped", "info()"),
            ("sum(", "invalid", "not valid PromQL"),
            ("", "invalid", "not valid PromQL"),
        ];
        for (query, category, says) in table {
            let err = scope_to_namespace(query, "prod").unwrap_err();
            assert_eq!(err.category(), *category, "{query}: {err}");
            assert!(err.to_string().contains(says), "{query}: {err}");
        }
        let or = scope_to_namespace("x{a=\"1\" or b=\"2\"}", "prod");
        assert!(
            matches!(
                or,
                Err(ScopeError::OrMatchers(_)) | Err(ScopeError::Parse(_))
            ),
            "{or:?}"
        );
        assert!(matches!(
            scope_to_namespace("x", "prod\"} or y{a=\"b"),
            Err(ScopeError::BadName { .. })
        ));
    }

    #[test]
    fn templates_render_per_workload() {
        let render = |t: &str| render(t, "prod", "Deployment", "api").unwrap();
        assert_eq!(
            render("max(x{namespace=\"$namespace\",w=\"$workload\"})"),
            "max(x{namespace=\"prod\",w=\"api\"})"
        );
        let pods = pods_regex("Deployment", "api");
        // `$pods`, and the older `$workload-.+` read the same way.
        for template in ["sum(x{pod=~\"$pods\"})", "sum(x{pod=~\"$workload-.+\"})"] {
            assert_eq!(
                render(template),
                format!("sum(x{{namespace=\"prod\",pod=~\"{pods}\"}})"),
                "{template}"
            );
        }
        // A template naming no namespace is confined all the same.
        assert_eq!(
            render("max(test_cpu_ratio{workload=\"$workload\"})"),
            "max(test_cpu_ratio{namespace=\"prod\",workload=\"api\"})"
        );
        assert!(matches!(
            super::render("x", "prod", "Deployment", "a\"b"),
            Err(ScopeError::BadName {
                what: "workload",
                ..
            })
        ));
    }
}
