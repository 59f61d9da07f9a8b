//! What a published result says besides its figures (the machine, the revision, the date, the
//! command), and the generated sections of `docs/benchmarks.md`.
//!
//! Each scenario owns one section between `<!-- bench:<scenario>:begin -->` and
//! `<!-- bench:<scenario>:end -->`; a run replaces what is between its markers and leaves the
//! rest of the file as it was. A file without the markers gets the section appended.

use std::path::Path;

use anyhow::{bail, Context};

/// The machine and the code a run measured.
pub struct Provenance {
    pub cpu_model: String,
    /// CPUs online (this process is pinned to fewer).
    pub cpus: usize,
    /// `git rev-parse --short HEAD`, marked when the working tree has uncommitted changes.
    pub revision: String,
    /// UTC, `2025-01-31 14:05 UTC`.
    pub date: String,
    /// This process's arguments, shell-quoted where needed.
    pub command: String,
}

impl Provenance {
    pub fn collect() -> Provenance {
        Provenance {
            cpu_model: cpu_model().unwrap_or_else(|| "unknown".to_owned()),
            cpus: online_cpus(),
            revision: revision(),
            date: date(),
            command: std::env::args().map(|a| shell_quote(&a)).collect::<Vec<_>>().join(" "),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

fn online_cpus() -> usize {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines().filter(|l| l.starts_with("processor")).count()
}

fn git(args: &[&str]) -> Option<std::process::Output> {
    std::process::Command::new("git").args(args).stderr(std::process::Stdio::null()).output().ok()
}

fn revision() -> String {
    let Some(out) = git(&["rev-parse", "--short", "HEAD"]).filter(|o| o.status.success()) else {
        return "unknown".to_owned();
    };
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // The results file itself does not count: each scenario of a full run rewrites it, and would
    // otherwise mark the next scenario's revision as modified.
    let status = ["status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)docs/benchmarks.md"];
    let dirty = git(&status).is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{rev} with uncommitted changes")
    } else {
        rev
    }
}

fn date() -> String {
    let Ok(format) = time::format_description::parse_borrowed::<2>("[year]-[month]-[day] [hour]:[minute] UTC") else {
        return "unknown".to_owned();
    };
    time::OffsetDateTime::now_utc().format(&format).unwrap_or_else(|_| "unknown".to_owned())
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn markers(scenario: &str) -> (String, String) {
    (format!("<!-- bench:{scenario}:begin -->"), format!("<!-- bench:{scenario}:end -->"))
}

/// `document` with the section of `scenario` replaced by `body` (appended when absent).
fn replace_section(document: &str, scenario: &str, body: &str) -> anyhow::Result<String> {
    let (begin, end) = markers(scenario);
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    match (document.find(&begin), document.find(&end)) {
        (Some(b), Some(e)) if b < e => Ok(format!("{}{section}{}", &document[..b], &document[e + end.len()..])),
        (None, None) => {
            let sep = if document.is_empty() || document.ends_with("\n\n") {
                ""
            } else if document.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Ok(format!("{document}{sep}{section}\n"))
        }
        _ => bail!("the markers {begin} and {end} are missing one of the pair or out of order"),
    }
}

/// Rewrites `scenario`'s section of the Markdown file at `path` (created when missing).
pub fn write_section(path: &Path, scenario: &str, body: &str) -> anyhow::Result<()> {
    let document = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = replace_section(&document, scenario, body).with_context(|| format!("in {}", path.display()))?;
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

/// One line of the summary table at the top of the benchmarks document, which collects every
/// scenario's headline figures with their targets. A scenario rewrites its own rows (matched by
/// `figure`) and leaves the others as they are.
pub struct SummaryRow {
    /// What is measured; also the row's key.
    pub figure: String,
    pub target: String,
    pub measured: String,
    /// `yes`, `no: ...`, or why it was not checked.
    pub met: String,
    /// The anchor of the scenario's section (`#echo-floor-s1`).
    pub section: String,
    pub date: String,
    pub revision: String,
}

/// The summary section's name, and its table's head.
const SUMMARY: &str = "summary";
const SUMMARY_HEAD: &str =
    "| figure | target | measured (median, min–max) | met? | measured |\n|---|---|---|---|---|\n";

impl SummaryRow {
    /// A row measured by the run `p` describes, for the section at the anchor `section`.
    pub fn new(
        p: &Provenance,
        section: &str,
        figure: impl Into<String>,
        target: impl Into<String>,
        measured: impl Into<String>,
        met: impl Into<String>,
    ) -> SummaryRow {
        SummaryRow {
            figure: figure.into(),
            target: target.into(),
            measured: measured.into(),
            met: met.into(),
            section: section.to_owned(),
            date: p.date.clone(),
            revision: p.revision.clone(),
        }
    }

    fn key(&self) -> String {
        format!("| [{}]({}) |", cell(&self.figure), self.section)
    }

    fn line(&self) -> String {
        format!(
            "{} {} | {} | {} | {}, {} |",
            self.key(),
            cell(&self.target),
            cell(&self.measured),
            cell(&self.met),
            self.date.split(' ').next().unwrap_or_default(),
            self.revision
        )
    }
}

/// Text for a table cell: a `|` would end it.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `document` with `rows` in its summary table: each replaces the row with its key, or is added.
fn replace_summary_rows(document: &str, rows: &[SummaryRow]) -> anyhow::Result<String> {
    let begin = format!("<!-- bench:{SUMMARY}:begin -->");
    let end = format!("<!-- bench:{SUMMARY}:end -->");
    let mut lines: Vec<String> = match (document.find(&begin), document.find(&end)) {
        (Some(b), Some(e)) if b < e => document[b + begin.len()..e]
            .lines()
            .filter(|l| l.starts_with("| [") && l.ends_with(" |"))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    for row in rows {
        let key = row.key();
        match lines.iter_mut().find(|l| l.starts_with(&key)) {
            Some(line) => *line = row.line(),
            None => lines.push(row.line()),
        }
    }
    let body = format!("{SUMMARY_HEAD}{}\n", lines.join("\n"));
    replace_section(document, SUMMARY, &body)
}

/// Rewrites `rows` in the summary table of the Markdown file at `path`.
pub fn write_summary(path: &Path, rows: &[SummaryRow]) -> anyhow::Result<()> {
    let document = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = replace_summary_rows(&document, rows).with_context(|| format!("in {}", path.display()))?;
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_section() {
        let doc = "# B\n\nintro\n\n<!-- bench:placement:begin -->\nold\n<!-- bench:placement:end -->\n\nafter\n";
        let out = replace_section(doc, "placement", "new\n").unwrap();
        assert_eq!(out, "# B\n\nintro\n\n<!-- bench:placement:begin -->\nnew\n<!-- bench:placement:end -->\n\nafter\n");
    }

    #[test]
    fn appends_a_missing_section() {
        let out = replace_section("# B\n", "placement", "new").unwrap();
        assert_eq!(out, "# B\n\n<!-- bench:placement:begin -->\nnew\n<!-- bench:placement:end -->\n");
        assert!(replace_section("<!-- bench:placement:end -->", "placement", "x").is_err());
    }

    #[test]
    fn summary_rows_replace_their_own_and_keep_the_others() {
        let row = |figure: &str, measured: &str| SummaryRow {
            figure: figure.to_owned(),
            target: "≥ 1x".to_owned(),
            measured: measured.to_owned(),
            met: "yes".to_owned(),
            section: "#s".to_owned(),
            date: "2026-12-04 21:00 UTC".to_owned(),
            revision: "abc1234".to_owned(),
        };
        let doc = "# B\n\n<!-- bench:summary:begin -->\n<!-- bench:summary:end -->\n\ntext\n";
        let once = replace_summary_rows(doc, &[row("A", "1"), row("B | b", "2")]).unwrap();
        assert!(once.contains("| [A](#s) | ≥ 1x | 1 | yes | 2026-12-04, abc1234 |\n"), "{once}");
        assert!(once.contains("| [B \\| b](#s) | ≥ 1x | 2 |"), "{once}");
        let twice = replace_summary_rows(&once, &[row("A", "3")]).unwrap();
        assert!(twice.contains("| [A](#s) | ≥ 1x | 3 |") && !twice.contains("| [A](#s) | ≥ 1x | 1 |"), "{twice}");
        assert!(twice.contains("| [B \\| b](#s) | ≥ 1x | 2 |"), "{twice}");
        assert!(twice.find("[A]").unwrap() < twice.find("[B").unwrap(), "order kept");
        assert!(twice.ends_with("<!-- bench:summary:end -->\n\ntext\n"));
    }

    #[test]
    fn quotes_arguments_for_the_shell() {
        assert_eq!(shell_quote("--db"), "--db");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
