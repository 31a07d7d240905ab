//! README.md's quick start lists every crate its code uses. (The snippets
//! themselves are compiled by `cargo test` as doc-tests: see
//! `ReadmeDoctests` in `src/lib.rs`.)

/// The body of the first fenced block after `after` whose info string
/// starts with `lang`.
fn block<'a>(text: &'a str, after: &str, lang: &str) -> &'a str {
    let from = text.find(after).expect("section") + after.len();
    let fence = format!("```{lang}");
    let start = text[from..].find(&fence).expect("block") + from;
    let body = start + text[start..].find('\n').expect("info line") + 1;
    let end = body + text[body..].find("```").expect("closing fence");
    &text[body..end]
}

/// The crates a snippet names by path (`name::…` or `#[name::…]`), except
/// the standard library's.
fn crates_used(code: &str) -> Vec<String> {
    let mut crates: Vec<String> = Vec::new();
    for (at, _) in code.match_indices("::") {
        let name: String = code[..at]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let before = code[..at - name.len()].chars().next_back();
        let is_root = !matches!(before, Some(':') | Some('_'))
            && name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if is_root && !["std", "core", "alloc", "crate", "self", "super"].contains(&name.as_str()) {
            crates.push(name);
        }
    }
    crates.sort();
    crates.dedup();
    crates
}

#[test]
fn quick_start_dependencies_cover_its_code() {
    let readme = include_str!("../README.md");
    let toml = block(readme, "## Quick start", "toml");
    let code = block(readme, "## Quick start", "rust");
    let used = crates_used(code);
    for expected in ["squall", "tokio", "tracing", "tracing_subscriber"] {
        assert!(
            used.iter().any(|c| c == expected),
            "{expected} not seen in {used:?}"
        );
    }
    let listed: Vec<String> = toml
        .lines()
        .filter_map(|line| {
            line.split_once('=')
                .map(|(name, _)| name.trim().replace('-', "_"))
        })
        .collect();
    for name in &used {
        assert!(
            listed.contains(name),
            "the quick start uses `{name}` but [dependencies] lacks it"
        );
    }
    // The line that makes logs (and "listening on …") visible.
    assert!(code.contains("tracing_subscriber::fmt::init()"));
}
