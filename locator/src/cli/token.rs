//! Where the admin CLI finds the admin token. The token is a secret, so it is never a flag value
//! (flags end up in shell history and process listings); it comes, first found wins, from:
//!
//! 1. `--token-file FILE` (given explicitly, so it beats the environment, as every flag does);
//! 2. `DUET_ADMIN_TOKEN`;
//! 3. the file named by `DUET_ADMIN_TOKEN_FILE`;
//! 4. `./duet-data/admin-token`, which a locator in one-machine mode generates, when it exists.
//!
//! Whitespace around the token is trimmed; an empty token is refused rather than sent.

use std::path::Path;

use duet_edge::config::{read_secret, Env};

use crate::config::{ENV_ADMIN_TOKEN, ENV_ADMIN_TOKEN_FILE};

/// The file a locator in one-machine mode writes its generated token to, relative to the
/// directory it was started in (its default data directory is `./duet-data`).
pub const DEFAULT_TOKEN_FILE: &str = "./duet-data/admin-token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no admin token: set DUET_ADMIN_TOKEN, or DUET_ADMIN_TOKEN_FILE to a file holding it, or pass \
         --token-file FILE (a locator in one-machine mode writes it to ./duet-data/admin-token, which is \
         used when present)"
    )]
    Missing,
    #[error("cannot read the admin token: {0}")]
    Unreadable(String),
    #[error("the admin token from {0} is empty")]
    Empty(String),
}

/// Finds the admin token (see the module documentation for the order). `default_file` is
/// [`DEFAULT_TOKEN_FILE`] outside tests.
pub fn resolve(env: &dyn Env, token_file: Option<&Path>, default_file: &Path) -> Result<String, TokenError> {
    if let Some(path) = token_file {
        return from_file(path);
    }
    let from_env = read_secret(env, ENV_ADMIN_TOKEN, ENV_ADMIN_TOKEN_FILE)
        .map_err(|e| TokenError::Unreadable(format!("{ENV_ADMIN_TOKEN_FILE}: {e}")))?;
    if let Some(token) = from_env {
        let source = if env.var(ENV_ADMIN_TOKEN).is_some() {
            ENV_ADMIN_TOKEN.to_owned()
        } else {
            format!("{ENV_ADMIN_TOKEN_FILE} ({})", env.var(ENV_ADMIN_TOKEN_FILE).unwrap_or_default())
        };
        return non_empty(&token, source);
    }
    match std::fs::metadata(default_file) {
        Ok(_) => from_file(default_file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TokenError::Missing),
        Err(e) => Err(TokenError::Unreadable(format!("{}: {e}", default_file.display()))),
    }
}

fn from_file(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenError::Unreadable(format!("{}: {e}", path.display())))?;
    non_empty(&text, path.display().to_string())
}

fn non_empty(token: &str, source: String) -> Result<String, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Empty(source));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn sources_are_tried_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let flag = write(dir.path(), "flag", "from-flag\n");
        let env_file = write(dir.path(), "env-file", "  from-env-file \n");
        let default = write(dir.path(), "admin-token", "from-default\n");
        let env_file = env_file.to_str().unwrap();
        let both = [(ENV_ADMIN_TOKEN, "from-env"), (ENV_ADMIN_TOKEN_FILE, env_file)];

        assert_eq!(resolve(&both, Some(&flag), &default).unwrap(), "from-flag");
        assert_eq!(resolve(&both, None, &default).unwrap(), "from-env");
        assert_eq!(resolve(&[(ENV_ADMIN_TOKEN_FILE, env_file)], None, &default).unwrap(), "from-env-file");
        assert_eq!(resolve(&[("X", "")], None, &default).unwrap(), "from-default");
        let missing = dir.path().join("nothing-here");
        let err = resolve(&[("X", "")], None, &missing).unwrap_err();
        assert!(matches!(err, TokenError::Missing), "{err}");
        let shown = err.to_string();
        for hint in [ENV_ADMIN_TOKEN, ENV_ADMIN_TOKEN_FILE, "--token-file", DEFAULT_TOKEN_FILE] {
            assert!(shown.contains(hint), "{shown}");
        }
    }

    #[test]
    fn unreadable_or_empty_sources_are_errors_not_fallthroughs() {
        let dir = tempfile::tempdir().unwrap();
        let default = write(dir.path(), "admin-token", "from-default\n");
        let gone = dir.path().join("gone");
        let err = resolve(&[("X", "")], Some(&gone), &default).unwrap_err();
        assert!(matches!(err, TokenError::Unreadable(ref m) if m.contains("gone")), "{err}");
        let gone = gone.to_str().unwrap();
        let err = resolve(&[(ENV_ADMIN_TOKEN_FILE, gone)], None, &default).unwrap_err();
        assert!(matches!(err, TokenError::Unreadable(ref m) if m.contains(ENV_ADMIN_TOKEN_FILE)), "{err}");
        let blank = write(dir.path(), "blank", " \n\t\n");
        let err = resolve(&[("X", "")], Some(&blank), &default).unwrap_err();
        assert!(matches!(err, TokenError::Empty(_)), "{err}");
        let err = resolve(&[(ENV_ADMIN_TOKEN, " ")], None, &default).unwrap_err();
        assert!(matches!(err, TokenError::Empty(ref s) if s == ENV_ADMIN_TOKEN), "{err}");
    }
}
