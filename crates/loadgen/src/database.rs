//! The database a benchmark run's locator uses: a SQLite file in the locator's data directory,
//! or a fresh PostgreSQL database `duet_bench_<random>` created and dropped with `psql` (so the
//! load generator needs no database driver of its own).
//!
//! Guarantee: a created PostgreSQL database is dropped when its guard goes, also on error or
//! interruption (`DROP DATABASE ... WITH (FORCE)`, which closes leftover connections).

use std::fmt;
use std::process::Stdio;

use anyhow::{bail, Context};

/// Admin connection URL for PostgreSQL runs; the benchmark databases are created through it.
pub const ENV_POSTGRES_URL: &str = "DUET_BENCH_POSTGRES_URL";
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Random characters in a benchmark database's name.
const DB_NAME_RANDOM_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbKind::Sqlite => "SQLite",
            DbKind::Postgres => "PostgreSQL",
        })
    }
}

/// The database of one run.
pub enum BenchDatabase {
    /// The locator's default: a SQLite file in its (temporary) data directory.
    Sqlite,
    Postgres(PostgresDatabase),
}

impl BenchDatabase {
    pub async fn create(kind: DbKind, postgres_admin_url: &str) -> anyhow::Result<BenchDatabase> {
        Ok(match kind {
            DbKind::Sqlite => BenchDatabase::Sqlite,
            DbKind::Postgres => BenchDatabase::Postgres(PostgresDatabase::create(postgres_admin_url).await?),
        })
    }

    /// `DUET_DATABASE_URL` for the locator; `None` keeps its SQLite default.
    pub fn url(&self) -> Option<&str> {
        match self {
            BenchDatabase::Sqlite => None,
            BenchDatabase::Postgres(db) => Some(&db.url),
        }
    }
}

/// A fresh PostgreSQL database, dropped on drop.
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    /// The admin URL with the database name replaced.
    url: String,
}

impl PostgresDatabase {
    async fn create(admin_url: &str) -> anyhow::Result<PostgresDatabase> {
        let name = format!("duet_bench_{}", random_lowercase(DB_NAME_RANDOM_LEN));
        let out = tokio::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", admin_url, "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .stdin(Stdio::null())
            .output()
            .await;
        let out = match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("psql not found: install postgresql-client, or run `scripts/bench`, which does")
            }
            other => other.context("running psql")?,
        };
        if !out.status.success() {
            bail!(
                "cannot create a database at {} ({ENV_POSTGRES_URL}): {}",
                redact_url(admin_url),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let url = replace_db_name(admin_url, &name);
        Ok(PostgresDatabase { admin_url: admin_url.to_owned(), name, url })
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        // Blocking, at teardown only: the run is over and nothing else waits on this thread.
        let status = std::process::Command::new("psql")
            .args(["-X", "-q", &self.admin_url, "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not drop the benchmark database {}", self.name);
        }
    }
}

fn random_lowercase(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// `url` with its database (the path) replaced by `name`, the query kept.
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// `url` without its password, for messages.
pub fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..].find('/').map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[authority_start..authority_start + at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..authority_start], &url[authority_start + at..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(replace_db_name("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(replace_db_name("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(replace_db_name("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}

/// The database of a scenario whose locator only places sessions (echo, idle, media): what it
/// measures never touches it. `--db` takes a list, like the database scenarios', so that
/// `scripts/bench --db ...` can pass it to every scenario; the first one named is used.
#[derive(Debug, Clone, clap::Args)]
pub struct LocatorDb {
    /// The locator's database (the first one named; what this scenario measures never touches it).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["sqlite"])]
    db: Vec<DbKind>,
    /// PostgreSQL admin URL, for `--db postgres`; each run creates and drops a database through it.
    #[arg(long, env = ENV_POSTGRES_URL, hide_env_values = true, value_name = "URL", default_value = DEFAULT_POSTGRES_URL)]
    postgres_url: String,
}

impl LocatorDb {
    pub fn kind(&self) -> DbKind {
        self.db.first().copied().unwrap_or(DbKind::Sqlite)
    }

    /// A fresh database for one run.
    pub async fn create(&self) -> anyhow::Result<BenchDatabase> {
        BenchDatabase::create(self.kind(), &self.postgres_url).await
    }
}
